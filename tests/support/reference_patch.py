"""A model patched with the naive, full-matrix definitions of SAC and CAM (the tests' oracle
for the fast patches, on any UNet the pack walks)."""

from __future__ import annotations

from comfyui_analogist.analogist_attn.geometry import regions_for_block
from comfyui_analogist.analogist_attn.oracle import cam_reference, sac_reference


def reference_patched(model, layout, blocks, scale=1.3, cam_blocks=None):
    """``model`` cloned, with naive SAC on ``blocks`` and naive CAM on ``cam_blocks``
    (default: the same blocks), as attention replace patches."""
    cells = layout.geometry

    def regions(q, extra):
        return regions_for_block(cells, extra["original_shape"], q.shape[1], q.device)

    def naive_sac(q, k, v, extra):
        return sac_reference(q, k, v, extra["n_heads"], regions(q, extra), scale)

    def naive_cam(q, k, v, extra):
        return cam_reference(q, k, v, extra["n_heads"], regions(q, extra))

    patched = model.clone()
    for key in blocks:
        patched.set_model_attn1_replace(naive_sac, *key)
    for key in blocks if cam_blocks is None else cam_blocks:
        patched.set_model_attn2_replace(naive_cam, *key)
    return patched
