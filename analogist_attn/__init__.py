"""Analogist's attention math in plain torch (no ComfyUI import): what SAC and CAM compute,
on any model, given token indices.

* ``geometry``: the one statement of the pixel -> latent -> token rule (cells are
  multiples of 64 px, the latent is 1/8), the cells as integer rectangles
  (``CellGeometry``), and where they fall on a block's token map at any token factor
  (``regions_at_factor``: a UNet level's downsample, or a DiT's 2 x 2 patches;
  ``RegionTokens``, cached index tensors), region names, and which B' tokens lie in a
  region of interest (``RegionTokensInside``).
* ``sdpa``: plain fused attention in ComfyUI's ``[batch, tokens, heads * dim]`` layout, and
  the cond/uncond batch selection SAC and CAM share.
* ``kernel``: the SAC kernel, once: the rows whose logits SAC clones, by log-sum-exp merge
  (CPU flash kernel) or augmented vectors (elsewhere), and the kernel probe.
* ``sac``: Self-Attention Cloning on a UNet block's token map (mapped onto ``kernel``).
* ``cam``: Cross-Attention Masking, computed for the kept rows only, or applied to an
  output another attention function produced.
* ``dit``: SAC and CAM on a DiT's joint text-image attention (Flux.1 Fill, experimental):
  the same geometry at 16 px per token after the text tokens, the same kernel.
* ``blocks``: a UNet's transformer blocks in the paper's order, as ComfyUI patch keys,
  and layer-range selection.
* ``oracle``: naive SAC and CAM straight from the definitions, UNet and DiT joint
  attention (the tests' oracle only).

Grid pixels live in ``analogist_pixels``; the ComfyUI glue in ``nodes``.
"""
