"""Several example pairs (K-shot): the grid geometry, the token regions, and SAC / CAM
against an independent naive K-shot definition (docs/design.md, "Several example pairs
(K-shot)")."""

from __future__ import annotations

import itertools

import pytest
import torch
from comfyui_analogist.analogist_attn import kernel
from comfyui_analogist.analogist_attn.cam import cam_attention
from comfyui_analogist.analogist_attn.geometry import Rect, region_tokens, regions_for_block
from comfyui_analogist.analogist_attn.oracle import sac_reference
from comfyui_analogist.analogist_attn.sac import sac_attention
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    MAX_PAIRS,
    GridLayout,
    make_layout,
)

ARRANGEMENTS = [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED]


# --- the grid --------------------------------------------------------------------------


def test_one_pair_is_exactly_the_papers_layout() -> None:
    for arrangement in ARRANGEMENTS:
        assert make_layout(256, 192, 3, arrangement, pairs=1) == make_layout(
            256, 192, 3, arrangement
        )
        assert make_layout(arrangement=arrangement).region_names == ("a", "a_prime", "b", "b_prime")


def test_several_pairs_one_row_each_query_row_last() -> None:
    layout = make_layout(256, 128, 2, pairs=3)
    assert (layout.grid_width, layout.grid_height, layout.pairs) == (512, 512, 3)
    assert layout.region_names == (
        "a",
        "a_prime",
        "a2",
        "a2_prime",
        "a3",
        "a3_prime",
        "b",
        "b_prime",
    )
    rows = {name: layout.cell(name) for name in layout.region_names}
    assert rows["a"] == Rect(0, 0, 256, 128) and rows["a_prime"] == Rect(256, 0, 256, 128)
    assert rows["a2"] == Rect(0, 128, 256, 128) and rows["a3_prime"] == Rect(256, 256, 256, 128)
    assert rows["b"] == Rect(0, 384, 256, 128) and rows["b_prime"] == Rect(256, 384, 256, 128)
    # The paper's paste offsets, continued: p in the first row/column, i c + p - 1 after.
    assert layout.paste("a") == Rect(2, 2, 253, 125)
    assert layout.paste("a3_prime") == Rect(257, 257, 253, 125)
    assert layout.paste("b_prime") == Rect(257, 385, 253, 125)
    assert [layout.label(n) for n in layout.region_names] == [
        "A1",
        "A1'",
        "A2",
        "A2'",
        "A3",
        "A3'",
        "B",
        "B'",
    ]


def test_aligned_arrangement_is_the_transpose() -> None:
    layout = make_layout(128, 256, 2, ARRANGEMENT_ALIGNED, pairs=2)
    assert (layout.grid_width, layout.grid_height) == (384, 512)
    assert layout.cell("a") == Rect(0, 0, 128, 256) and layout.cell("a_prime") == Rect(
        0, 256, 128, 256
    )
    assert layout.cell("a2") == Rect(128, 0, 128, 256) and layout.cell("a2_prime") == Rect(
        128, 256, 128, 256
    )
    assert layout.cell("b") == Rect(256, 0, 128, 256) and layout.cell("b_prime") == Rect(
        256, 256, 128, 256
    )


def test_pair_limit_names_the_reason() -> None:
    make_layout(pairs=MAX_PAIRS)
    with pytest.raises(ValueError, match=rf"use 1 to {MAX_PAIRS}.*square of the grid"):
        make_layout(pairs=MAX_PAIRS + 1)
    with pytest.raises(ValueError, match="no region 'a3'"):
        make_layout(pairs=2).cell("a3")


# --- token regions -----------------------------------------------------------------------


def _token_indices(layout: GridLayout, name: str, h: int, w: int) -> list[int]:
    """Independent of tokens.py: the cell's tokens row-major, from its pixel rectangle."""
    px_x, px_y = layout.grid_width // w, layout.grid_height // h
    rect = layout.cell(name)
    return [
        (rect.y // px_y + r) * w + rect.x // px_x + c
        for r in range(rect.height // px_y)
        for c in range(rect.width // px_x)
    ]


@pytest.mark.parametrize("pairs", [1, 2, 3, 4])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_region_tokens_follow_the_cells(pairs: int, arrangement: str) -> None:
    layout = make_layout(128, 64, 2, arrangement, pairs=pairs)
    h, w = layout.grid_height // 32, layout.grid_width // 32  # 32 px per token
    regions = region_tokens(layout.geometry, h, w)
    assert regions.pairs == pairs
    for k, (a, a_prime) in enumerate(regions.examples, start=1):
        prefix = "a" if k == 1 else f"a{k}"
        assert a.tolist() == _token_indices(layout, prefix, h, w)
        assert a_prime.tolist() == _token_indices(layout, f"{prefix}_prime", h, w)
        assert regions.region(f"a{k}_prime").tolist() == a_prime.tolist()
    assert regions.a.tolist() == _token_indices(layout, "a", h, w)
    assert regions.b_prime.tolist() == _token_indices(layout, "b_prime", h, w)
    a_primes = {i for _, ap in regions.examples for i in ap.tolist()}
    assert set(regions.sac_untouched.tolist()) == set(range(h * w)) - a_primes - set(
        regions.b_prime.tolist()
    )
    assert set(regions.outside_a_prime.tolist()) == set(range(h * w)) - a_primes
    # CAM: only B' listens, whatever K.
    assert regions.cam_rows.tolist() == regions.b_prime.tolist()


def test_block_regions_for_several_pairs_and_misaligned_cells() -> None:
    layout = make_layout(256, 256, 2, pairs=2)  # 512 x 768 px: latent 96 x 64
    regions = regions_for_block(
        layout.geometry, [2, 4, 96, 64], 12 * 8
    )  # deepest level, 64 px tokens
    assert (regions.h, regions.w) == (12, 8)
    assert regions.examples[1][0][0].item() == 4 * 8  # A2 starts on token row 4
    assert regions.b_prime[0].item() == 8 * 8 + 4
    odd = make_layout(96, 96, 2, pairs=3)  # 96 px cells: inside a 64 px token
    with pytest.raises(
        ValueError,
        match=r"right edge of the A1 cell \(x = 96 px\).*64 px per token.*128 x 128 or 64 x 64",
    ):
        regions_for_block(odd.geometry, [1, 4, 48, 24], 6 * 3)


# --- SAC and CAM against the naive K-shot definition --------------------------------------


def naive_kshot_sac(q, k, v, heads, layout, h, w, scale):
    """Straight from docs/design.md in float64, indices from the cells' pixels (not tokens.py)."""
    q, k, v = (t.double() for t in (q, k, v))
    batch, n, channels = q.shape
    d = channels // heads
    qh, kh, vh = (t.reshape(batch, n, heads, d).transpose(1, 2) for t in (q, k, v))
    original = qh @ kh.transpose(-1, -2) / d**0.5
    logits = original.clone()
    b = torch.tensor(_token_indices(layout, "b", h, w))
    b_prime = torch.tensor(_token_indices(layout, "b_prime", h, w))
    for pair in range(1, layout.pairs + 1):
        prefix = "a" if pair == 1 else f"a{pair}"
        a = torch.tensor(_token_indices(layout, prefix, h, w))
        a_prime = torch.tensor(_token_indices(layout, f"{prefix}_prime", h, w))
        for i, j in itertools.product(range(len(a)), range(len(b))):
            logits[..., a_prime[i], b_prime[j]] = scale * original[..., a[i], b[j]]
            logits[..., b_prime[i], a_prime[j]] = scale * original[..., b[i], a[j]]
    out = logits.softmax(-1) @ vh
    return out.transpose(1, 2).reshape(batch, n, channels)


def naive_kshot_cam(q, k, v, heads, layout, h, w):
    q, k, v = (t.double() for t in (q, k, v))
    batch, n, channels = q.shape
    d = channels // heads
    qh = q.reshape(batch, n, heads, d).transpose(1, 2)
    kh, vh = (t.reshape(batch, t.shape[1], heads, d).transpose(1, 2) for t in (k, v))
    probs = (qh @ kh.transpose(-1, -2) / d**0.5).softmax(-1)
    listening = torch.zeros(n, dtype=torch.bool)
    listening[_token_indices(layout, "b_prime", h, w)] = True
    probs = probs * listening[None, None, :, None]
    return (probs @ vh).transpose(1, 2).reshape(batch, n, channels)


@pytest.fixture(params=["key split (CPU)", "augmented vectors (CUDA, fallback)"])
def sac_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param.startswith("augmented"):
        monkeypatch.setattr(kernel, "attention_with_lse", lambda like: None)
    elif kernel.attention_with_lse(torch.zeros(1)) is None:
        pytest.skip("this torch has no CPU flash kernel returning the log-sum-exp")
    return request.param


def _qkv(batch, n, heads, dim, seed, tokens=None):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, heads * dim, generator=gen)
    kv_n = n if tokens is None else tokens
    return (
        q,
        torch.randn(batch, kv_n, heads * dim, generator=gen),
        torch.randn(batch, kv_n, heads * dim, generator=gen),
    )


def _relative(fast, oracle) -> float:
    return ((fast.double() - oracle).abs().max() / oracle.abs().max()).item()


@pytest.mark.parametrize("pairs", [1, 2, 3])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_fast_kshot_sac_equals_the_naive_definition(pairs, arrangement, scale, sac_path) -> None:
    layout = make_layout(128, 128, 2, arrangement, pairs=pairs)
    h, w = layout.grid_height // 64, layout.grid_width // 64  # 2 x 2 tokens per cell
    regions = region_tokens(layout.geometry, h, w)
    for heads, dim, batch in ((1, 8, 1), (2, 16, 2)):
        q, k, v = _qkv(batch, h * w, heads, dim, seed=pairs * 10 + heads)
        oracle = naive_kshot_sac(q, k, v, heads, layout, h, w, scale)
        fast = sac_attention(q, k, v, heads, regions, scale)
        assert fast.dtype == q.dtype and _relative(fast, oracle) <= 1e-5
        # The tests' full-matrix reference (used by the patched-UNet tests) agrees too.
        assert (
            _relative(
                sac_reference(q.double(), k.double(), v.double(), heads, regions, scale), oracle
            )
            <= 1e-12
        )


def test_every_example_pair_matters_for_b_prime() -> None:
    layout = make_layout(128, 128, 2, pairs=2)
    regions = region_tokens(layout.geometry, 6, 4)
    q, k, v = _qkv(1, 24, 2, 8, seed=4)
    base = sac_attention(q, k, v, 2, regions, 1.3)
    v2 = v.clone()
    v2[:, regions.examples[1][1]] += 1.0  # change the values of A2' only
    moved = sac_attention(q, k, v2, 2, regions, 1.3)
    # B' rows hear A2' through the cloned logits; rows of A1' only through plain ones.
    assert (moved[:, regions.b_prime] - base[:, regions.b_prime]).abs().max() > 1e-2
    one_pair = region_tokens(make_layout(128, 128, 2, pairs=1).geometry, 4, 4)
    assert one_pair.pairs == 1


@pytest.mark.parametrize("pairs", [1, 2, 3])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_kshot_cam_only_b_prime_listens(pairs, arrangement) -> None:
    layout = make_layout(128, 128, 2, arrangement, pairs=pairs)
    h, w = layout.grid_height // 64, layout.grid_width // 64
    q, k, v = _qkv(2, h * w, 2, 8, seed=pairs, tokens=7)
    fast = cam_attention(q, k, v, 2, region_tokens(layout.geometry, h, w))
    assert _relative(fast, naive_kshot_cam(q, k, v, 2, layout, h, w)) <= 1e-5
