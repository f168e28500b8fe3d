"""Analogist for ComfyUI: registers the pack's nodes with ComfyUI.

Importing the pack is cheap (no model loading, no network). A node family whose
dependency is missing or broken is disabled on its own; the rest still loads.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# Frontend extension: shows the GPT-4V node's answer on the node.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
