"""Fast Self-Attention Cloning against the naive definition, and what SAC must change."""

from __future__ import annotations

import itertools

import pytest
import torch
from comfyui_analogist.analogist_attn import kernel
from comfyui_analogist.analogist_attn.geometry import (
    REGION_LABELS,
    REGIONS,
    CellGeometry,
    Rect,
    RegionTokens,
    region_tokens,
)
from comfyui_analogist.analogist_attn.oracle import plain_reference, sac_reference
from comfyui_analogist.analogist_attn.sac import sac_attention
from comfyui_analogist.analogist_attn.sdpa import plain_attention
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    make_layout,
)

MAPS = [(8, 8), (4, 8), (16, 12)]
HEADS_AND_DIMS = [(1, 8), (2, 16), (5, 4)]
BATCHES = [1, 2, 3]


def _qkv(batch: int, n: int, heads: int, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, n, heads * dim, generator=gen) for _ in range(3))


def _relative_error(fast: torch.Tensor, oracle: torch.Tensor) -> float:
    return ((fast.double() - oracle).abs().max() / oracle.abs().max()).item()


def _check_against_reference(
    regions: RegionTokens, scale: float, mask: torch.Tensor | None, seed: int
) -> None:
    for (heads, dim), batch in itertools.product(HEADS_AND_DIMS, BATCHES):
        q, k, v = _qkv(batch, regions.n_tokens, heads, dim, seed)
        batch_mask = None if mask is None else mask[:batch]
        fast = sac_attention(q, k, v, heads, regions, scale, batch_mask=batch_mask)
        oracle = sac_reference(
            q.double(), k.double(), v.double(), heads, regions, scale, batch_mask=batch_mask
        )
        assert fast.shape == q.shape and fast.dtype == q.dtype
        assert _relative_error(fast, oracle) <= 1e-5, (heads, dim, batch)


@pytest.fixture(params=["key split (CPU)", "augmented vectors (CUDA, fallback)"])
def sac_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both exact SAC paths: CPU takes the log-sum-exp key split where the
    kernel allows it, every other device the augmented vectors; CI has only a CPU."""
    if request.param.startswith("augmented"):
        monkeypatch.setattr(kernel, "attention_with_lse", lambda like: None)
    elif kernel.attention_with_lse(torch.zeros(1)) is None:
        pytest.skip("this torch has no CPU flash kernel returning the log-sum-exp")
    return request.param


@pytest.mark.parametrize("arrangement", [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED])
@pytest.mark.parametrize("scale", [1.0, 1.3, 2.0])
@pytest.mark.parametrize("hw", MAPS)
def test_fast_sac_equals_naive_definition(
    hw: tuple[int, int], scale: float, arrangement: str, sac_path: str
) -> None:
    regions = region_tokens(make_layout(arrangement=arrangement).geometry, *hw)
    _check_against_reference(regions, scale, None, seed=hw[0] * 31 + hw[1])


@pytest.mark.parametrize("mask", [[True, False, True], [False, True, False], [False] * 3])
def test_sac_on_selected_batch_entries_only(mask: list[bool], sac_path: str) -> None:
    regions = region_tokens(make_layout().geometry, 4, 8)
    _check_against_reference(regions, 1.3, torch.tensor(mask), seed=7)


def test_unselected_entries_get_plain_attention() -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 2, 8, seed=3)
    out = sac_attention(q, k, v, 2, regions, 1.3, batch_mask=torch.tensor([False, True]))
    torch.testing.assert_close(out[:1], plain_attention(q[:1], k[:1], v[:1], 2))
    assert not torch.allclose(out[1:], plain_attention(q[1:], k[1:], v[1:], 2), atol=1e-3)


@pytest.mark.parametrize("arrangement", [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED])
def test_non_square_grid(arrangement: str, sac_path: str) -> None:
    layout = make_layout(cell_width=384, cell_height=256, arrangement=arrangement)
    regions = region_tokens(layout.geometry, 8, 12)  # 512 x 768 grid at 64 px/token
    _check_against_reference(regions, 1.3, torch.tensor([True, False, True]), seed=11)


def test_regions_that_do_not_tile_the_map() -> None:
    # A 3 x 3 cell layout using the corners only: tokens outside every region keep plain
    # attention, and A' / B' queries still see them as ordinary keys.
    regions = region_tokens(corner_cells(), 6, 9)
    assert regions.sac_untouched.numel() == 54 - 2 * 6
    _check_against_reference(regions, 1.3, None, seed=5)


def test_scale_one_still_edits_a_prime_and_b_prime_only() -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 64, 2, 8, seed=1)
    naive = sac_reference(q, k, v, 2, regions, 1.0)
    plain = plain_reference(q, k, v, 2)
    untouched = regions.sac_untouched
    assert torch.equal(naive[:, untouched], plain[:, untouched])
    for rows in (regions.a_prime, regions.b_prime):
        assert (naive[:, rows] - plain[:, rows]).abs().max() > 0.05
    fast = sac_attention(q, k, v, 2, regions, 1.0)
    torch.testing.assert_close(fast[:, untouched], plain[:, untouched])
    torch.testing.assert_close(fast, naive)


def test_scale_one_on_a_grid_whose_a_prime_repeats_a_changes_nothing() -> None:
    # If A' holds A's queries and B' holds B's keys, the cloned logits are the ones
    # already there: a check on which block is copied where.
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(1, 64, 2, 8, seed=2)
    q[:, regions.a_prime] = q[:, regions.a]
    q[:, regions.b_prime] = q[:, regions.b]
    k[:, regions.b_prime] = k[:, regions.b]
    k[:, regions.a_prime] = k[:, regions.a]
    torch.testing.assert_close(sac_attention(q, k, v, 2, regions, 1.0), plain_attention(q, k, v, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("upcast", [False, True])
def test_half_precision_stays_finite_and_close(
    dtype: torch.dtype, upcast: bool, sac_path: str
) -> None:
    regions = region_tokens(make_layout().geometry, 16, 12)
    q, k, v = _qkv(2, 192, 4, 16, seed=9)
    oracle = sac_reference(q.double(), k.double(), v.double(), 4, regions, 1.3)
    fast = sac_attention(q.to(dtype), k.to(dtype), v.to(dtype), 4, regions, 1.3, upcast=upcast)
    assert fast.dtype == dtype and torch.isfinite(fast).all()
    assert _relative_error(fast, oracle) <= (1e-2 if dtype == torch.bfloat16 else 2e-3)


def test_half_precision_large_logits_do_not_overflow() -> None:
    # Raw q.k products here overflow fp16 when formed naively; fused attention copes, and
    # SAC's augmented logits (s times larger in the cloned blocks) must too.
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(1, 64, 2, 64, seed=4)
    q, k, v = (q * 100).half(), (k * 100).half(), v.half()
    naive_products = q.view(1, 64, 2, 64).transpose(1, 2) @ k.view(1, 64, 2, 64).permute(0, 2, 3, 1)
    assert torch.isinf(naive_products).any()
    assert torch.isfinite(plain_attention(q, k, v, 2)).all()
    assert torch.isfinite(sac_attention(q, k, v, 2, regions, 2.0)).all()
    assert torch.isfinite(sac_attention(q, k, v, 2, regions, 2.0, upcast=True)).all()


def test_wrong_map_or_mask_is_refused() -> None:
    regions = region_tokens(make_layout().geometry, 8, 8)
    q, k, v = _qkv(2, 32, 2, 8, seed=0)
    with pytest.raises(ValueError, match="8 x 8 token map"):
        sac_attention(q, k, v, 2, regions)
    q, k, v = _qkv(2, 64, 2, 8, seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        sac_attention(q, k, v, 2, regions, batch_mask=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="3 heads"):
        sac_attention(q, k, v, 3, regions)


def corner_cells() -> CellGeometry:
    """A 576 x 384 px grid of 3 x 3 cells of 192 x 128 px, the regions in its corners."""
    rects = (
        Rect(0, 0, 192, 128),
        Rect(384, 0, 192, 128),
        Rect(0, 256, 192, 128),
        Rect(384, 256, 192, 128),
    )
    return CellGeometry(576, 384, REGIONS, tuple(REGION_LABELS[n] for n in REGIONS), rects)
