"""The reference attention against the definition, its row selection and its composition."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import reference_attention as ra
from support import mimicbrush as smb


def naive_attention(q, k, v, heads):
    """Softmax(q k^T / sqrt(d)) v per head, with the full logit matrix (the oracle)."""
    b, n, c = q.shape
    d = c // heads
    qh = q.view(b, n, heads, d).transpose(1, 2).double()
    kh = k.view(b, k.shape[1], heads, d).transpose(1, 2).double()
    vh = v.view(b, v.shape[1], heads, d).transpose(1, 2).double()
    w = torch.softmax(qh @ kh.transpose(-1, -2) / d**0.5, dim=-1)
    return (w @ vh).transpose(1, 2).reshape(b, n, c).float()


def test_mixed_attention_matches_the_definition_on_cond_rows_only():
    from comfyui_analogist.analogist_attn.sdpa import plain_attention

    gen = torch.Generator().manual_seed(0)
    heads, n, m, c = 2, 12, 7, 8
    q, k, v = (torch.randn(4, n, c, generator=gen) for _ in range(3))
    cond_rows = torch.tensor([False, True, False, True])
    k_ref, v_ref = (torch.randn(2, m, c, generator=gen) for _ in range(2))
    out = ra.mixed_self_attention(q, k, v, k_ref, v_ref, cond_rows, heads, plain_attention)
    for row in range(4):
        raw = naive_attention(q[row : row + 1], k[row : row + 1], v[row : row + 1], heads)
        if cond_rows[row]:
            j = int(cond_rows[:row].sum())
            ref = naive_attention(
                q[row : row + 1],
                torch.cat([k[row : row + 1], k_ref[j : j + 1]], 1),
                torch.cat([v[row : row + 1], v_ref[j : j + 1]], 1),
                heads,
            )
            expected = 0.5 * ref + 0.5 * raw
        else:
            expected = raw
        torch.testing.assert_close(out[row : row + 1], expected, atol=1e-5, rtol=1e-5)


def test_the_reference_unet_runs_cond_rows_only_and_stops_after_the_last_fusion_block(models):
    g = smb.load_tensors("unet_call.safetensors")
    patch = ra.ReferenceAttention(
        models.imitative, models.reference, g["reference_latents"], g["context"][1:2]
    )
    unet = models.reference.model.diffusion_model
    seen = {"batch": [], "out": 0}
    h1 = unet.register_forward_pre_hook(lambda mod, args: seen["batch"].append(args[0].shape[0]))
    h2 = unet.out.register_forward_hook(lambda *a: seen.__setitem__("out", seen["out"] + 1))
    try:
        recorded = patch.record(torch.tensor([667.0]), rows=1)
    finally:
        h1.remove()
        h2.remove()
    assert seen["batch"] == [1] and seen["out"] == 0
    assert list(recorded) == patch.keys and len(patch.keys) == 10  # SD1.5's middle + 9 up blocks
    assert all(t.shape[0] == 1 for t in recorded.values())


def test_another_packs_self_attention_replace_is_refused_by_name(models):
    other = models.imitative.clone()

    def their_patch(q, k, v, extra_options):
        return q

    other.set_model_attn1_replace(their_patch, "output", 5, 0)
    g = smb.load_tensors("unet_call.safetensors")
    with pytest.raises(
        ValueError, match=r"\('output', 5, 0\): .*their_patch.*MimicBrush needs those slots"
    ):
        ra.patch_model(other, models.reference, g["reference_latents"], g["context"][1:2])


def test_an_existing_model_function_wrapper_is_chained(models, pytorch_attention):
    """A wrapper set before MimicBrush still runs, and sees MimicBrush's reference tokens."""
    g = smb.load_tensors("unet_call.safetensors")
    base = models.imitative.clone()
    calls = []

    def theirs(apply_model, args):
        calls.append(ra.OPTIONS_KEY in args["c"]["transformer_options"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    base.set_model_unet_function_wrapper(theirs)
    patched = ra.patch_model(base, models.reference, g["reference_latents"], g["context"][1:2])
    eps = smb.unet_call_eps(patched, g["x"], g["context"], int(g["t"][0]), [1, 0])
    assert calls == [True]
    assert smb.rel(eps, g["noise_pred"]) <= 1e-5


def test_the_patched_model_declares_the_reference_unet_for_loading(models):
    g = smb.load_tensors("unet_call.safetensors")
    patched = ra.patch_model(
        models.imitative, models.reference, g["reference_latents"], g["context"][1:2]
    )
    if not hasattr(patched, "get_additional_models_with_key"):
        pytest.skip("this host has no additional models on ModelPatcher")
    assert patched.get_additional_models_with_key(ra.ADDITIONAL_MODELS_KEY) == [models.reference]
