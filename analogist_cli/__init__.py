"""The headless command-line tools (``python -m analogist ...``), split by concern.

Not used by the ComfyUI nodes. Importing it is cheap: no torch, no ComfyUI.

* ``main`` — the argument parser and the commands (``run``, ``score``).
* ``inputs`` — checks of the user's files and options before anything runs.
* ``runner`` — builds the prompt from a shipped workflow and runs the jobs on servers.
* ``embedded`` — starts (and always stops) a private ComfyUI for a run.
* ``comfy_api`` — the HTTP/websocket client of a ComfyUI server.
* ``checkpoints`` — is a file an SD inpainting checkpoint? (reads its header only)
* ``workflow_format`` — ComfyUI's UI (frontend) workflow format: reading a shipped workflow
  into the API prompt the frontend would queue.
* ``score`` — the paper's evaluation (CLIP direction score) over a results folder.
"""
