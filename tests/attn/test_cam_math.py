"""Fast Cross-Attention Masking against the naive definition."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_attn.cam import (
    cam_attention,
    cam_mask_output,
    cam_projected_output,
)
from comfyui_analogist.analogist_attn.geometry import (
    REGION_LABELS,
    REGIONS,
    CellGeometry,
    Rect,
    region_tokens,
)
from comfyui_analogist.analogist_attn.oracle import cam_reference, plain_reference
from comfyui_analogist.analogist_attn.sdpa import plain_attention
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    make_layout,
)

TEXT_TOKENS = 77


def _qkv(batch: int, n: int, heads: int, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads * dim, generator=gen)
    k = torch.randn(batch, TEXT_TOKENS, heads * dim, generator=gen)
    v = torch.randn(batch, TEXT_TOKENS, heads * dim, generator=gen)
    return q, k, v


@pytest.mark.parametrize("arrangement", [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED])
@pytest.mark.parametrize("hw", [(8, 8), (4, 8), (16, 12)])
@pytest.mark.parametrize(("heads", "dim", "batch"), [(1, 8, 1), (2, 16, 2), (5, 4, 3)])
def test_fast_cam_equals_naive_definition(
    hw: tuple[int, int], arrangement: str, heads: int, dim: int, batch: int
) -> None:
    regions = region_tokens(make_layout(arrangement=arrangement).geometry, *hw)
    q, k, v = _qkv(batch, regions.n_tokens, heads, dim, seed=batch)
    fast = cam_attention(q, k, v, heads, regions)
    oracle = cam_reference(q.double(), k.double(), v.double(), heads, regions)
    assert fast.shape == q.shape
    assert ((fast.double() - oracle).abs().max() / oracle.abs().max()).item() <= 1e-5


def test_rows_outside_b_prime_are_exactly_zero() -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 2, 8, seed=0)
    out = cam_attention(q, k, v, 2, regions)
    silent = torch.cat([regions.a, regions.a_prime, regions.b])
    assert torch.count_nonzero(out[:, silent]) == 0
    torch.testing.assert_close(
        out[:, regions.b_prime], plain_attention(q, k, v, 2)[:, regions.b_prime]
    )


def test_cam_on_selected_batch_entries_only() -> None:
    regions = region_tokens(make_layout().geometry, 4, 8)
    q, k, v = _qkv(3, 32, 2, 8, seed=1)
    mask = torch.tensor([False, True, False])
    out = cam_attention(q, k, v, 2, regions, batch_mask=mask)
    torch.testing.assert_close(out, cam_reference(q, k, v, 2, regions, batch_mask=mask))
    torch.testing.assert_close(
        out[mask == 0], plain_attention(q[mask == 0], k[mask == 0], v[mask == 0], 2)
    )


def test_tokens_outside_every_region_keep_the_text() -> None:
    # The definition silences A, A' and B only; a token in no region is left alone.
    regions = region_tokens(corner_cells(), 6, 9)
    q, k, v = _qkv(2, 54, 2, 8, seed=2)
    torch.testing.assert_close(
        cam_attention(q, k, v, 2, regions), cam_reference(q, k, v, 2, regions)
    )


def test_masking_a_wrapped_output_equals_cam() -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 2, 8, seed=3)
    wrapped = plain_reference(q, k, v, 2)
    torch.testing.assert_close(
        cam_mask_output(wrapped, regions), cam_reference(q, k, v, 2, regions)
    )
    mask = torch.tensor([True, False])
    torch.testing.assert_close(
        cam_mask_output(wrapped, regions, mask),
        cam_reference(q, k, v, 2, regions, batch_mask=mask),
    )


@pytest.mark.parametrize(
    "batch_mask", [None, torch.tensor([True, False]), torch.tensor([False, True])]
)
def test_cam_after_the_output_projection_equals_projecting_the_naive_cam(batch_mask) -> None:
    """What the ComfyUI patch does: the dropped rows become to_out of a zero row."""
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 2, 8, seed=4)
    gen = torch.Generator().manual_seed(5)
    to_out = torch.nn.Linear(16, 12)
    with torch.no_grad():
        to_out.weight.copy_(torch.randn(12, 16, generator=gen))
        to_out.bias.copy_(torch.randn(12, generator=gen))
    with torch.no_grad():
        projected = to_out(plain_reference(q, k, v, 2))
        got = cam_projected_output(projected, regions, to_out(torch.zeros(1, 1, 16)), batch_mask)
        want = to_out(cam_reference(q, k, v, 2, regions, batch_mask=batch_mask))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, projected), "CAM changed nothing"


def test_masking_leaves_exact_zeros_even_over_non_finite_rows() -> None:
    regions = region_tokens(make_layout().geometry, 4, 4)
    out = torch.full((1, 16, 8), float("nan"))
    masked = cam_mask_output(out, regions)
    silent = torch.cat([regions.a, regions.a_prime, regions.b])
    assert torch.count_nonzero(masked[:, silent]) == 0
    assert torch.isnan(masked[:, regions.b_prime]).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("upcast", [False, True])
def test_half_precision_keeps_dtype_and_stays_close(dtype: torch.dtype, upcast: bool) -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 4, 16, seed=4)
    oracle = cam_reference(q, k, v, 4, regions)
    out = cam_attention(q.to(dtype), k.to(dtype), v.to(dtype), 4, regions, upcast=upcast)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), oracle, atol=3e-2, rtol=0)


def corner_cells() -> CellGeometry:
    """A 576 x 384 px grid of 3 x 3 cells of 192 x 128 px, the regions in its corners."""
    rects = (
        Rect(0, 0, 192, 128),
        Rect(384, 0, 192, 128),
        Rect(0, 256, 192, 128),
        Rect(384, 256, 192, 128),
    )
    return CellGeometry(576, 384, REGIONS, tuple(REGION_LABELS[n] for n in REGIONS), rects)
