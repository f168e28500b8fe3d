"""Analogist's attention math in plain torch (no ComfyUI import): what SAC and CAM compute,
on any model, given token indices.

* ``geometry``: the one statement of the pixel -> latent -> token rule (cells are
  multiples of 64 px, the latent is 1/8), the cells as integer rectangles
  (``CellGeometry``), and where they fall on a transformer block's token map
  (``RegionTokens``, cached index tensors), region names, and which B' tokens lie in a
  region of interest (``RegionTokensInside``).
* ``sdpa``: plain fused attention in ComfyUI's ``[batch, tokens, heads * dim]`` layout, and
  the cond/uncond batch selection SAC and CAM share.
* ``sac``: Self-Attention Cloning, exact, without the N x N logit matrix.
* ``cam``: Cross-Attention Masking, computed for the kept rows only, or applied to an
  output another attention function produced.
* ``dit``: SAC and CAM on a DiT's joint text-image attention (Flux.1 Fill, experimental).
* ``blocks``: a UNet's transformer blocks in the paper's order, as ComfyUI patch keys,
  and layer-range selection.
* ``oracle``: naive SAC and CAM straight from the definitions (the tests' oracle only).

Grid pixels live in ``analogist_pixels``; the ComfyUI glue in ``nodes``.
"""
