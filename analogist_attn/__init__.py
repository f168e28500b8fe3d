"""Host-independent math of the Analogist method, in plain torch (no ComfyUI import).

* ``layout``: the grid geometry shared by every node (the paper's 2x2 grid, or one row per
  example pair), and the one statement of the px -> latent -> token rule (cells are
  multiples of 64 px, the latent is 1/8), as integer cell rectangles.
* ``grid``: builds the grid from A, A', B (the paper's construction, byte for byte, plus
  letterbox/crop fits) and cuts B' back out at B's original size.
* ``marks``: the label squares and arrows drawn for the vision-language model.
* ``tokens``: where the grid's regions fall on a transformer block's token map (cached
  index tensors), and the block's map size inferred from the latent shape.
* ``attention``: plain fused attention in ComfyUI's ``[batch, tokens, heads * dim]``
  layout, and the cond/uncond batch selection SAC and CAM share.
* ``sac``: Self-Attention Cloning, exact, without the N x N logit matrix.
* ``cam``: Cross-Attention Masking, computed for the kept rows only, or applied to an
  output another attention function produced.
* ``dit``: SAC and CAM on a DiT's joint text-image attention (Flux.1 Fill, experimental).
* ``reference``: naive SAC and CAM straight from the definitions (test oracle only).
* ``blocks``: a UNet's transformer blocks in the paper's order, as ComfyUI patch keys,
  and layer-range selection.
"""
