"""Analogist for ComfyUI: registers the pack's nodes with ComfyUI.

Importing the pack is cheap (no model loading, no network). A node family whose
dependency is missing or broken is disabled on its own; the rest still loads. It also
copies the example workflows' pictures into ComfyUI's input folder when they are missing
(``example_inputs``), so the templates run as shipped.
"""

from .example_inputs import install_example_inputs
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# Frontend extension: shows the GPT-4V node's answer on the node.
WEB_DIRECTORY = "./web"

try:
    install_example_inputs()
except Exception as error:  # never fail the pack's load over example pictures
    import logging

    logging.getLogger("comfyui_analogist").warning(
        "Analogist: example images not copied into ComfyUI's input folder: %s", error
    )

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
