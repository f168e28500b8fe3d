"""The analogy grid in pixels (PIL / numpy / torch, no ComfyUI import).

* ``layout``: where A, A', B, B' (and further example pairs) sit in the grid, and how each
  B was placed: the ``GridLayout`` that travels along node edges.
* ``grid``: builds the grid from A, A', B (the paper's construction byte for byte, plus
  letterbox/crop fits) and cuts B' back out at B's size.
* ``region``: a region of interest on B: the inpainting mask and Grid Crop's composite.
* ``marks``: the label squares and arrows drawn for the vision-language model.
* ``image_files``: image files as ComfyUI's Load Image sees them; refuses what it would
  change silently (high bit depth, animation, transparency) for the runner and ReVersion.
* ``start_latent``: does the latent a sampler starts from match a layout (SAC/CAM check)?

The pixel -> latent -> token rule is stated once, in ``analogist_attn.geometry``.
"""
