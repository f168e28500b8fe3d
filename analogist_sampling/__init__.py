"""diffusers-exact DDIM for ComfyUI's custom-sampling nodes.

``ddim`` is plain torch (no ``comfy`` import): diffusers' ``DDIMScheduler`` schedule
(scaled-linear betas in float32, "leading" timesteps with ``steps_offset``, the final step
to ``alphas_cumprod[0]``), img2img/inpaint ``strength``, the sigma list in ComfyUI's
convention and the eta-0 DDIM step. ``comfy_sampler`` is the ComfyUI side: the SAMPLER
object that runs those steps through ComfyUI's model wrapper (CFG, patches, conds).
"""
