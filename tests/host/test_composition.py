"""SAC + CAM next to every core node that patches the model, in either order (issue 11).

In-process on the real host: ComfyUI's own node classes (``comfy_extras``), ComfyUI's
SD1.5 model class with a toy-width inpainting UNet (``support.sd15``), one sampling step
through ``comfy.sample``. For every node, applied before and after SAC+CAM (the paper's
layers 3..10), either

* both act: SAC and CAM fired on every chosen block, the result differs from SAC+CAM
  alone (the other node acted) and from the other node alone (ours acted), or
* sampling (or patching) stops with a clear error that names the other node's patch.

No server is needed for this: the nodes are the host's classes, called as the executor
calls them.
"""

from __future__ import annotations

import importlib
import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from comfyui_analogist.analogist_attn.blocks import transformer_block_keys
from comfyui_analogist.analogist_attn.geometry import regions_for_block
from comfyui_analogist.analogist_attn.oracle import cam_reference
from comfyui_analogist.analogist_pixels.layout import make_layout
from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES, block_key
from support.lora import random_unet_lora
from support.sd15 import tiny_inpaint_model_patcher

CONTEXT_DIM = 64
LATENT = 16  # 128 x 128 px: a 2x2 grid of 64 px cells
LAYOUT = make_layout(cell_width=64, cell_height=64)
PAPER_LAYERS = (3, 11)


def host_has_wrappers() -> bool:
    import comfy.model_patcher

    return hasattr(comfy.model_patcher.ModelPatcher, "add_wrapper_with_key")


NO_GUARD = (
    "this ComfyUI has no model-patcher wrappers, so SAC cannot check its slots at sampling "
    "(docs/composition.md)"
)


@pytest.fixture(scope="module")
def base():
    model = tiny_inpaint_model_patcher(seed=0)
    # Random biases on every attn2.to_out: the rows CAM drops then carry the projection
    # of a zero row, which a wrong CAM (plain zeros, or a stale bias) would not match.
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, module in model.model.diffusion_model.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.05)
    return model


def ours(model, layers=PAPER_LAYERS):
    start, end = layers
    (model,) = AnalogistSACPatch().patch(model, LAYOUT, 1.3, start, end, 0.0, 1.0, PASSES[0])
    (model,) = AnalogistCAMPatch().patch(model, LAYOUT, start, end, 0.0, 1.0, PASSES[0])
    return model


def conditioning(seed: int):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, LATENT, LATENT, generator=gen)
    mask = torch.zeros(1, 1, LATENT, LATENT)
    mask[..., LATENT // 2 :, LATENT // 2 :] = 1.0
    extra = {"concat_latent_image": latent, "concat_mask": mask}
    cond = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    uncond = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    empty = [[torch.zeros(1, 77, CONTEXT_DIM), dict(extra)]]
    return latent, cond, uncond, empty


def soft_mask():
    """A graded inpainting mask (what Differential Diffusion reads)."""
    ramp = torch.linspace(0.0, 1.0, LATENT)
    return (ramp[None, :] * ramp[:, None])[None].expand(1, LATENT, LATENT).clone()


def sample(model, noise_mask=None, seed=0):
    import comfy.sample

    latent, cond, uncond, _ = conditioning(seed)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed + 100))
    return comfy.sample.sample(
        model,
        noise,
        1,
        7.5,
        "euler",
        "normal",
        cond,
        uncond,
        latent,
        denoise=0.98,
        disable_pbar=True,
        seed=seed,
        noise_mask=noise_mask,
    )


def core_node(node_id: str, module: str):
    """A core node class, from the 0.30.0 layout or the 2024 registry package's."""
    for path in (f"comfy_extras.{module}", f"comfy_extras.nodes.{module}"):
        try:
            cls = getattr(importlib.import_module(path), node_id, None)
        except ImportError:
            continue
        if cls is not None:
            return cls
    pytest.skip(f"this ComfyUI has no core node {node_id}")


def run_node(node_id: str, module: str, **inputs):
    """Call a core node the way the executor does (new io.ComfyNode or classic API)."""
    cls = core_node(node_id, module)
    if hasattr(cls, "define_schema"):
        fn = cls.execute
    else:
        fn = getattr(cls(), cls.FUNCTION)
    accepted = inspect.signature(fn).parameters
    out = fn(**{k: v for k, v in inputs.items() if k in accepted})
    out = getattr(out, "result", out)
    return out[0]


# An IPAdapter-style node: IPAdapter_plus keeps one patch object per attn2 key and, when
# the key is taken, calls ``.add()`` on whatever sits there (which crashed on CAM's old
# replace patch). This mirrors its set_model_patch_replace / CrossAttentionPatch logic.
IP_CALLS: Counter = Counter()


class CrossAttentionPatch:
    def __init__(self, weight: float):
        self.weights = [weight]

    def add(self, weight: float) -> None:
        self.weights.append(weight)

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        out = optimized_attention(q, k, v, extra_options["n_heads"])
        IP_CALLS[block_key(extra_options)] += 1
        for weight in self.weights:  # the "image prompt": a term that depends on the query
            out = out + weight * torch.tanh(q)
        return out


def ipadapter_standin(model, three_part: bool):
    keys = transformer_block_keys(model.model)
    keys = keys if three_part else [key[:2] for key in keys]  # SD1.5 IPAdapter: 2-part keys
    patched = model.clone()
    to = patched.model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    slot = to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
    for key in keys:
        if key not in slot:
            slot[key] = CrossAttentionPatch(0.5)
        else:
            slot[key].add(0.5)
    patched.model_options["transformer_options"] = to
    return patched


def lora(model):
    import comfy.sd

    state = random_unet_lora(model.model.diffusion_model, seed=1)
    return comfy.sd.load_lora_for_models(model, None, state, 1.0, 0.0)[0]


def perp_neg(model):
    empty = conditioning(0)[3]
    return run_node(
        "PerpNeg", "nodes_perpneg", model=model, empty_conditioning=empty, neg_scale=1.0
    )


@dataclass
class Case:
    name: str
    apply: Callable
    errors: dict[str, str] = field(default_factory=dict)  # order -> regex of the error
    layers: tuple[int, int] = PAPER_LAYERS
    noise_mask: Callable | None = None
    needs_guard: bool = False
    check: Callable | None = None


def ip_fired_everywhere(model):
    assert set(IP_CALLS) == set(transformer_block_keys(model.model)), (
        "the IPAdapter-style patch must run on every block"
    )


SAG_REPLACED = (
    r"block \('middle', 0, 0\) \(layer 6\) no longer runs SAC.*nodes_sag.*start_layer/end_layer"
)
SAG_REFUSED = r"block \('middle', 0, 0\) already has a self-attention replacement.*nodes_sag.*start_layer/end_layer"
PAG_SHADOWED = r"PerturbedAttentionGuidance.*block \('middle', 0\) \(layer 6\).*takes precedence.*start_layer/end_layer"
TILED = r"block \('input', 5, 0\) \(layer 3\).*tiled, merged or extended.*HyperTile.*max_depth"
MERGED = r"block \('input', 1, 0\) \(layer 0\).*tiled, merged or extended.*ToMe"

CASES = [
    Case(
        "FreeU",
        lambda m: run_node("FreeU", "nodes_freelunch", model=m, b1=1.1, b2=1.2, s1=0.9, s2=0.2),
    ),
    Case(
        "FreeU_V2",
        lambda m: run_node("FreeU_V2", "nodes_freelunch", model=m, b1=1.3, b2=1.4, s1=0.9, s2=0.2),
    ),
    # tile_size 64 at a 16-latent: the first level in 2x2 tiles, SAC's levels untouched.
    Case(
        "HyperTile",
        lambda m: run_node(
            "HyperTile",
            "nodes_hypertile",
            model=m,
            tile_size=64,
            swap_size=1,
            max_depth=0,
            scale_depth=False,
        ),
    ),
    Case(
        "HyperTile max_depth 1",
        lambda m: run_node(
            "HyperTile",
            "nodes_hypertile",
            model=m,
            tile_size=32,
            swap_size=1,
            max_depth=1,
            scale_depth=False,
        ),
        errors={"before": TILED, "after": TILED},
    ),
    Case("ToMe", lambda m: run_node("TomePatchModel", "nodes_tomesd", model=m, ratio=0.3)),
    Case(
        "ToMe on SAC's layers",
        lambda m: run_node("TomePatchModel", "nodes_tomesd", model=m, ratio=0.3),
        errors={"before": MERGED, "after": MERGED},
        layers=(0, 11),
    ),
    Case(
        "RescaleCFG",
        lambda m: run_node("RescaleCFG", "nodes_model_advanced", model=m, multiplier=0.7),
    ),
    Case("PerpNeg", perp_neg),
    Case(
        "DifferentialDiffusion",
        lambda m: run_node(
            "DifferentialDiffusion", "nodes_differential_diffusion", model=m, strength=1.0
        ),
        noise_mask=soft_mask,
    ),
    Case(
        "SelfAttentionGuidance",
        lambda m: run_node(
            "SelfAttentionGuidance", "nodes_sag", model=m, scale=0.5, blur_sigma=2.0
        ),
        errors={"before": SAG_REFUSED, "after": SAG_REPLACED},
        needs_guard=True,
    ),
    Case(
        "PerturbedAttentionGuidance",
        lambda m: run_node("PerturbedAttentionGuidance", "nodes_pag", model=m, scale=3.0),
        errors={"before": PAG_SHADOWED, "after": PAG_SHADOWED},
        needs_guard=True,
    ),
    Case(
        "UNetSelfAttentionMultiply",
        lambda m: run_node(
            "UNetSelfAttentionMultiply",
            "nodes_attention_multiply",
            model=m,
            q=1.2,
            k=0.9,
            v=1.1,
            out=0.8,
        ),
    ),
    Case(
        "UNetCrossAttentionMultiply",
        lambda m: run_node(
            "UNetCrossAttentionMultiply",
            "nodes_attention_multiply",
            model=m,
            q=1.2,
            k=0.9,
            v=1.1,
            out=0.8,
        ),
    ),
    Case("LoRA", lora),
    Case(
        "IPAdapter-style, 2-part keys",
        lambda m: ipadapter_standin(m, three_part=False),
        check=ip_fired_everywhere,
    ),
    Case(
        "IPAdapter-style, 3-part keys",
        lambda m: ipadapter_standin(m, three_part=True),
        check=ip_fired_everywhere,
    ),
]

_cache: dict = {}


def cached_sample(key, build, noise_mask):
    if key not in _cache:
        _cache[key] = sample(build(), noise_mask=noise_mask)
    return _cache[key]


def assert_ours_fired_on_every_chosen_block(model, layers):
    chosen = transformer_block_keys(model.model)[slice(*layers)]
    options = model.model_options["transformer_options"]
    sac_calls: Counter = Counter()
    for fn in {id(f): f for f in (options["patches_replace"]["attn1"][k] for k in chosen)}.values():
        assert getattr(fn, "analogist_kind", None) == "sac"
        sac_calls.update(fn.calls)
    cam_calls: Counter = Counter()
    for fn in options["patches"]["attn2_output_patch"]:
        if getattr(fn, "analogist_kind", None) == "cam":
            cam_calls.update(fn.calls)
    assert set(sac_calls) == set(chosen), f"SAC fired on {sorted(sac_calls)}"
    assert set(cam_calls) == set(chosen), f"CAM fired on {sorted(cam_calls)}"


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_core_node_composes_with_sac_and_cam_or_stops_clearly(base, case, order):
    if case.needs_guard and not host_has_wrappers():
        pytest.skip(NO_GUARD)
    noise_mask = case.noise_mask() if case.noise_mask else None

    def build():
        return (
            ours(case.apply(base), case.layers)
            if order == "before"
            else case.apply(ours(base, case.layers))
        )

    if order in case.errors:
        with pytest.raises(ValueError, match=case.errors[order]):
            sample(build(), noise_mask=noise_mask)
        return

    IP_CALLS.clear()
    model = build()
    both = sample(model, noise_mask=noise_mask)
    assert torch.isfinite(both).all()
    assert_ours_fired_on_every_chosen_block(model, case.layers)
    if case.check:
        case.check(model)
    ours_alone = cached_sample(
        ("ours", case.layers, case.noise_mask), lambda: ours(base, case.layers), noise_mask
    )
    other_alone = cached_sample(("other", case.name), lambda: case.apply(base), noise_mask)
    assert not torch.allclose(both, ours_alone, atol=1e-6), (
        f"{case.name} had no effect next to SAC+CAM"
    )
    assert not torch.allclose(both, other_alone, atol=1e-6), (
        f"SAC+CAM had no effect next to {case.name}"
    )


def test_cam_follows_a_patch_on_the_blocks_own_output_bias(base):
    """The rows CAM drops are the block's to_out of a zero row *as sampled*: a LoRA-style
    diff on that bias (patched into the weights at load) must show, exactly as in the
    naive reference that zeroes the attention rows before to_out."""
    keys = transformer_block_keys(base.model)[slice(*PAPER_LAYERS)]
    state = base.model.diffusion_model.state_dict()
    bias_keys = [k for k in state if k.endswith("attn2.to_out.0.bias")]
    patched = base.clone()
    gen = torch.Generator().manual_seed(11)
    patched.add_patches(
        {
            f"diffusion_model.{k}": (torch.randn(state[k].shape, generator=gen) * 0.3,)
            for k in bias_keys
        },
        1.0,
    )

    cells = LAYOUT.geometry

    def naive_cam(q, k, v, extra):
        regions = regions_for_block(cells, extra["original_shape"], q.shape[1], q.device)
        return cam_reference(q, k, v, extra["n_heads"], regions)

    reference = patched.clone()
    for key in keys:
        reference.set_model_attn2_replace(naive_cam, *key)
    (fast,) = AnalogistCAMPatch().patch(patched, LAYOUT, *PAPER_LAYERS, 0.0, 1.0, PASSES[0])
    got, want = sample(fast), sample(reference)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    (unpatched_bias,) = AnalogistCAMPatch().patch(base, LAYOUT, *PAPER_LAYERS, 0.0, 1.0, PASSES[0])
    assert not torch.allclose(got, sample(unpatched_bias), atol=1e-6), (
        "the bias patch had no effect"
    )
