"""MimicBrush (Chen et al. 2024, ali-vilab/MimicBrush) on ComfyUI's own classes.

* ``checkpoint``: reads and validates the official files (``mimicbrush.bin``,
  ``depth_anything_vit*14.pth``) and says clearly when a file is something else.
* ``unet``: both UNets' diffusers keys into ComfyUI's ``UNetModel``, sizes read from the
  state dict, wrapped as ComfyUI models (``ModelPatcher``) so model management applies.
* ``encoders``: the image encoder (ComfyUI's CLIP vision class, penultimate hidden state)
  and its Linear projector, the depth guider conv stack.
* ``depth_anything``: Depth Anything V1 (DINOv2 ViT /14 + DPT head) in plain torch.
* ``images``: the official demo's pre- and post-processing (padding, collage, resampling,
  mask binarising, CLIP and depth inputs, the blurred-mask composite).
* ``reference_attention``: the reference UNet pass and the imitative UNet's mixed
  self-attention, as ComfyUI patches keyed on ``cond_or_uncond``.
* ``pipeline``: the pieces above assembled into MODEL, CONDITIONING and LATENT for
  ComfyUI's samplers (VAE posterior sampling with the official generator order).
"""
