"""Command-line tools for Analogist: run the shipped workflows headless.

This package is *not* part of the ComfyUI node pack (ComfyUI imports only the repo's
top-level ``__init__.py``); it is what ``python -m analogist`` runs. Importing it is cheap:
no torch, no ComfyUI. Modules:

* ``workflow_format`` — the shipped workflows are in ComfyUI's UI (frontend) format; this
  turns one into the API prompt the frontend would queue, given ``/object_info``.
* ``checkpoints`` — is a file an SD inpainting checkpoint? (reads the safetensors header)
* ``runner`` / ``__main__`` — ``python -m analogist run ...``.
"""
