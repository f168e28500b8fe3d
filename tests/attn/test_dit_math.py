"""SAC and CAM on a DiT's joint attention: the fused computation equals the full-matrix
definitions (``analogist_attn.oracle.joint_reference``, float64), on both routes of the one
SAC kernel, with one or several example pairs and CAM's "text only in the region"."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_attn.dit import joint_attention, joint_regions
from comfyui_analogist.analogist_attn.oracle import joint_reference, joint_region_indices
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    ARRANGEMENTS,
    make_layout,
)


def region_indices(layout, latent_h, latent_w, text):
    return joint_region_indices(layout.geometry, latent_h, latent_w, text)


TEXT = 7


def qkv(layout, text=TEXT, batch=2, heads=2, dim=16, seed=0):
    latent_h, latent_w = layout.grid_height // 8, layout.grid_width // 8
    tokens = text + (latent_h // 2) * (latent_w // 2)
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, tokens, dim, generator=gen) * 1.5 for _ in range(3))
    return q, k, v, (latent_h, latent_w)


@pytest.mark.parametrize("use_lse", [True, False], ids=["log-sum-exp merge", "augmented vectors"])
@pytest.mark.parametrize("arrangement", [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED])
@pytest.mark.parametrize(("sac", "cam"), [(1.3, False), (None, True), (1.3, True), (0.0, True)])
def test_fused_joint_attention_equals_the_definitions(use_lse, arrangement, sac, cam):
    layout = make_layout(cell_width=128, cell_height=64, arrangement=arrangement)
    q, k, v, latent = qkv(layout)
    regions = joint_regions(layout.geometry, latent, TEXT)
    got = joint_attention(q, k, v, regions, sac_scale=sac, cam=cam, use_lse=use_lse)
    want = joint_reference(
        q, k, v, region_indices(layout, *latent, TEXT), TEXT, sac_scale=sac, cam=cam
    )
    plain = joint_reference(q, k, v, region_indices(layout, *latent, TEXT), TEXT)
    assert (got - want).abs().max() <= 1e-5
    assert (got - plain).abs().max() > 1e-2, "the edit changed nothing"


def test_text_rows_and_unedited_rows_are_plain_attention_through_the_given_function():
    layout = make_layout(cell_width=64, cell_height=64)
    q, k, v, latent = qkv(layout)
    regions = joint_regions(layout.geometry, latent, TEXT)
    seen = []

    def plain(q_part, k_part, v_part):
        seen.append((q_part.shape[2], k_part.shape[2]))
        return torch.nn.functional.scaled_dot_product_attention(q_part, k_part, v_part).transpose(
            1, 2
        )

    got = joint_attention(q, k, v, regions, sac_scale=1.3, cam=True, plain=plain)
    n_region = regions.a.numel()
    # text rows + A + B over every key; nothing else: A and B rows over the image keys
    assert seen == [(TEXT, q.shape[2]), (2 * n_region, q.shape[2] - TEXT)]
    want = joint_reference(q, k, v, region_indices(layout, *latent, TEXT), TEXT)
    assert torch.allclose(got[:, :TEXT], want[:, :TEXT], atol=1e-6)


def test_sac_with_scale_1_and_no_cam_changes_only_where_a_b_differ_from_a_prime_b_prime():
    """With s = 1 and A' = A, B' = B token for token, the cloned logits equal the originals."""
    layout = make_layout(cell_width=64, cell_height=64)
    q, k, v, latent = qkv(layout)
    regions = joint_regions(layout.geometry, latent, TEXT)
    for src, dst in ((regions.a, regions.a_prime), (regions.b, regions.b_prime)):
        q[:, :, dst], k[:, :, dst] = q[:, :, src], k[:, :, src]
    got = joint_attention(q, k, v, regions, sac_scale=1.0)
    plain = joint_reference(q, k, v, region_indices(layout, *latent, TEXT), TEXT)
    assert (got - plain).abs().max() <= 1e-5


def test_a_cell_edge_inside_a_16px_token_is_refused_with_the_fix():
    layout = make_layout(cell_width=72, cell_height=64)
    with pytest.raises(
        ValueError,
        match=r"right edge of the A cell \(x = 72 px\) falls inside a DiT token \(16 px per token.*multiples of 64 px",
    ):
        joint_regions(layout.geometry, (16, 18), TEXT)


def test_half_precision_on_cpu_stays_close_to_the_float64_definitions():
    layout = make_layout(cell_width=64, cell_height=64)
    q, k, v, latent = qkv(layout)
    regions = joint_regions(layout.geometry, latent, TEXT)
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    got = joint_attention(q, k, v, regions, sac_scale=1.3, cam=True)
    want = joint_reference(
        q.float(),
        k.float(),
        v.float(),
        region_indices(layout, *latent, TEXT),
        TEXT,
        sac_scale=1.3,
        cam=True,
    )
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() <= 0.02 * want.abs().max()


@pytest.mark.parametrize("use_lse", [True, False], ids=["log-sum-exp merge", "augmented vectors"])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("pairs", [2, 3])
@pytest.mark.parametrize(("sac", "cam"), [(1.3, False), (None, True), (1.3, True)])
def test_several_example_pairs_equal_the_k_shot_definition(use_lse, arrangement, pairs, sac, cam):
    """docs/design.md, "Several example pairs (K-shot)": each A'_k clones from A_k (keys B'), B' from B
    with keys every A'_k; CAM silences the text for every A_k, A'_k and B."""
    layout = make_layout(64, 64, 2, arrangement, pairs=pairs)
    q, k, v, latent = qkv(layout, seed=pairs)
    regions = joint_regions(layout.geometry, latent, TEXT)
    assert len(regions.examples) == pairs
    naive = region_indices(layout, *latent, TEXT)
    got = joint_attention(q, k, v, regions, sac_scale=sac, cam=cam, use_lse=use_lse)
    want = joint_reference(q, k, v, naive, TEXT, sac_scale=sac, cam=cam)
    assert (got - want).abs().max() <= 1e-5
    # Pair k matters: dropping the last pair from the definition changes the answer.
    fewer = {n: t for n, t in naive.items() if n not in (f"a{pairs}", f"a{pairs}_prime")}
    assert (got - joint_reference(q, k, v, fewer, TEXT, sac_scale=sac, cam=cam)).abs().max() > 1e-3


@pytest.mark.parametrize("use_lse", [True, False], ids=["log-sum-exp merge", "augmented vectors"])
@pytest.mark.parametrize("sac", [1.3, None])
@pytest.mark.parametrize("pairs", [1, 2])
def test_cam_text_only_in_the_region_silences_the_b_prime_rows_outside(use_lse, sac, pairs):
    layout = make_layout(64, 64, 2, pairs=pairs)
    q, k, v, latent = qkv(layout, seed=5)
    regions = joint_regions(layout.geometry, latent, TEXT)
    gen = torch.Generator().manual_seed(3)
    inside = torch.rand(regions.b_prime.numel(), generator=gen) < 0.5
    inside[0], inside[-1] = True, False  # some of each
    naive = region_indices(layout, *latent, TEXT)
    quiet = [naive["b_prime"][~inside]] * q.shape[0]
    got = joint_attention(q, k, v, regions, sac, True, use_lse=use_lse, text_in_b_prime=inside)
    want = joint_reference(q, k, v, naive, TEXT, sac_scale=sac, cam=True, quiet_rows=quiet)
    assert (got - want).abs().max() <= 1e-5
    whole = joint_reference(q, k, v, naive, TEXT, sac_scale=sac, cam=True)
    assert (got - whole).abs().max() > 1e-3, "the region changed nothing"
    # Every flag set is the paper's CAM, exactly.
    all_in = torch.ones_like(inside)
    paper = joint_attention(q, k, v, regions, sac, True, use_lse=use_lse, text_in_b_prime=all_in)
    assert (paper - whole).abs().max() <= 1e-5
