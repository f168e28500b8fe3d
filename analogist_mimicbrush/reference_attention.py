"""MimicBrush's reference attention as ComfyUI patches.

Per UNet call, a model function wrapper first runs the reference UNet on the clean
reference latent at the same timestep, with the *cond* context only (the official code also
computes an uncond half and throws it away: we never compute it), and records ``norm1``'s
output ``n_ref`` in every fusion block (the middle block and every output-block transformer:
10 on SD1.5); the run stops after the last one. In the same blocks of the imitative UNet an
attn1 replace patch computes, on the cond rows (found from ``cond_or_uncond``, never from
the row position),

    0.5 * attn(q = n, kv = cat(n, n_ref)) + 0.5 * attn(q = n, kv = n)

before ``to_out`` (affine, so mixing before it is exact), and plain self-attention on the
uncond rows. Attention is ComfyUI's own fused function: no N x N matrix is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..analogist_attn.blocks import BlockKey, transformer_block_modules
from ..analogist_attn.sdpa import batch_mask_from_cond_or_uncond

REFERENCE_WEIGHT = 0.5  # the official mix of the reference and the plain attention
OPTIONS_KEY = "mimicbrush_reference"
ADDITIONAL_MODELS_KEY = "mimicbrush_reference_unet"


class _ReferenceRecorded(Exception):
    """Raised inside the reference UNet once the last fusion block is recorded."""


def fusion_block_keys(model: Any) -> list[BlockKey]:
    """The middle block's and every output block's transformers, in execution order."""
    return [k for k in transformer_block_modules(model) if k[0] in ("middle", "output")]


def _comfy_attention() -> Callable[..., torch.Tensor]:
    from comfy.ldm.modules import attention

    return attention.optimized_attention  # looked up per call: --use-*-attention applies


def mixed_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_ref: torch.Tensor,
    v_ref: torch.Tensor,
    cond_rows: torch.Tensor | None,
    heads: int,
    attention: Callable[..., torch.Tensor],
    weight: float = REFERENCE_WEIGHT,
) -> torch.Tensor:
    """Plain attention everywhere; on ``cond_rows`` mixed with attention over [own ; ref].

    ``q, k, v``: ``[B, N, C]`` projected from the imitative block's ``norm1`` output;
    ``k_ref, v_ref``: ``[R, M, C]`` projected from the reference's, one row per selected
    row (``R`` = number of True in ``cond_rows``, or ``B`` when it is None).
    """
    raw = attention(q, k, v, heads)
    if cond_rows is None:
        sel_q, sel_k, sel_v = q, k, v
    else:
        if not bool(cond_rows.any()):
            return raw
        sel_q, sel_k, sel_v = q[cond_rows], k[cond_rows], v[cond_rows]
    ref = attention(
        sel_q, torch.cat([sel_k, k_ref], dim=1), torch.cat([sel_v, v_ref], dim=1), heads
    )
    if cond_rows is None:
        return weight * ref + (1.0 - weight) * raw
    out = raw.clone()
    out[cond_rows] = weight * ref + (1.0 - weight) * raw[cond_rows]
    return out


class ReferenceAttention:
    """The two patches and the per-call reference pass of one apply node's output.

    ``reference_latent`` is clean (scaled latent space) and ``reference_context`` the cond
    image embedding, one row each per latent row being sampled (or one row for all).
    """

    def __init__(
        self,
        imitative,
        reference,
        reference_latent: torch.Tensor,
        reference_context: torch.Tensor,
        weight: float = REFERENCE_WEIGHT,
    ):
        self.reference = reference
        self.reference_latent = reference_latent
        self.reference_context = reference_context
        self.weight = weight
        self.keys = fusion_block_keys(imitative)
        ref_keys = fusion_block_keys(reference)
        if ref_keys != self.keys:
            raise ValueError(
                f"the reference UNet's fusion blocks {ref_keys} do not match the imitative "
                f"UNet's {self.keys}: the two UNets come from different files."
            )
        # Hosts whose ModelPatcher cannot carry additional models (ComfyUI 0.0.1) do not load
        # the reference UNet with the imitative one: it is loaded before each reference pass.
        self.load_with_sampling = hasattr(imitative, "set_additional_models")
        self.modules = {
            k: m for k, m in transformer_block_modules(imitative).items() if k in self.keys
        }

    # -- the reference pass -------------------------------------------------------------

    def _rows(self, t: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        latent, context = self.reference_latent, self.reference_context
        if latent.shape[0] == rows:
            return latent, context
        if latent.shape[0] == 1:
            return latent.expand(rows, -1, -1, -1), context.expand(rows, -1, -1)
        raise ValueError(
            f"the MimicBrush reference holds {latent.shape[0]} rows but the sampler runs "
            f"{rows} latents per pass: sample the LATENT the MimicBrush apply node returned."
        )

    @torch.no_grad()
    def record(self, timestep: torch.Tensor, rows: int) -> dict[BlockKey, torch.Tensor]:
        """``norm1`` outputs of the reference UNet in each fusion block, ``[rows, M, C]``."""
        if not self.load_with_sampling:
            import comfy.model_management

            comfy.model_management.load_models_gpu([self.reference])
        base = self.reference.model
        unet = base.diffusion_model
        device = self.reference.load_device
        dtype = (
            base.get_dtype_inference() if hasattr(base, "get_dtype_inference") else base.get_dtype()
        )
        latent, context = self._rows(timestep, rows)
        recorded: dict[BlockKey, torch.Tensor] = {}
        wanted = set(self.keys)

        def recorder(n, context_attn1, value_attn1, extra_options):
            key = (
                extra_options["block"][0],
                extra_options["block"][1],
                extra_options.get("block_index", 0),
            )
            if key in wanted:
                recorded[key] = n
                if len(recorded) == len(wanted):
                    raise _ReferenceRecorded
            return n, context_attn1, value_attn1

        t = timestep.reshape(-1)[:1].to(device).float().expand(latent.shape[0])
        options = {"patches": {"attn1_patch": [recorder]}}
        try:
            unet(
                latent.to(device, dtype),
                t,
                context=context.to(device, dtype),
                transformer_options=options,
            )
        except _ReferenceRecorded:
            pass
        missing = [k for k in self.keys if k not in recorded]
        if missing:
            raise RuntimeError(f"the reference UNet never reached the fusion blocks {missing}")
        return recorded

    # -- the imitative side -------------------------------------------------------------

    def model_function_wrapper(self, previous: Callable | None = None) -> Callable:
        """Runs the reference pass, hands its tokens to the attn1 patches, then the UNet."""

        def wrapper(apply_model, args):
            c = dict(args["c"])
            cond_or_uncond = list(args["cond_or_uncond"])
            x = args["input"]
            options = dict(c.get("transformer_options", {}))
            if 0 in cond_or_uncond:
                sigma = args["timestep"]
                model_sampling = self.reference.model.model_sampling
                timestep = model_sampling.timestep(sigma.reshape(-1)[:1])
                rows = x.shape[0] // len(cond_or_uncond)
                options[OPTIONS_KEY] = self.record(timestep, rows)
            else:
                options[OPTIONS_KEY] = None
            c["transformer_options"] = options
            if previous is not None:
                return previous(apply_model, {**args, "c": c})
            return apply_model(x, args["timestep"], **c)

        return wrapper

    def attn1_replace(self, key: BlockKey) -> Callable:
        module = self.modules[key]

        def replace(q, k, v, extra_options):
            heads = extra_options["n_heads"]
            attention = _comfy_attention()
            recorded = extra_options.get(OPTIONS_KEY)
            if not recorded:
                return attention(q, k, v, heads)
            n_ref = recorded[key]
            cond_rows = batch_mask_from_cond_or_uncond(
                extra_options["cond_or_uncond"],
                q.shape[0],
                on_cond=True,
                on_uncond=False,
                device=q.device,
            )
            n_cond = q.shape[0] if cond_rows is None else int(cond_rows.sum())
            chunks = n_cond // n_ref.shape[0] if n_ref.shape[0] else 0
            n_ref = n_ref.to(q.device, q.dtype).repeat(chunks, 1, 1)
            attn1 = module.attn1
            return mixed_self_attention(
                q,
                k,
                v,
                attn1.to_k(n_ref),
                attn1.to_v(n_ref),
                cond_rows,
                heads,
                attention,
                self.weight,
            )

        return replace


def other_attn1_patches(model, keys: Sequence[BlockKey]) -> list[str]:
    """Other packs' attn1 replace patches on our blocks, or a wrapper we cannot chain."""
    opts = model.model_options.get("transformer_options", {})
    slots = opts.get("patches_replace", {}).get("attn1", {})
    clashes = []
    for key in keys:
        for slot in (key, key[:2]):
            if slot in slots:
                fn = slots[slot]
                clashes.append(f"{slot}: {getattr(fn, '__qualname__', type(fn).__name__)}")
    return clashes


def patch_model(imitative, reference, reference_latent, reference_context, weight=REFERENCE_WEIGHT):
    """A clone of the imitative model with MimicBrush's reference attention."""
    patch = ReferenceAttention(imitative, reference, reference_latent, reference_context, weight)
    clashes = other_attn1_patches(imitative, patch.keys)
    if clashes:
        raise ValueError(
            "another node already replaces self-attention in MimicBrush's blocks ("
            + "; ".join(clashes)
            + "): MimicBrush needs those slots. Apply MimicBrush to the model before that node's "
            "patch is added, or leave that node out."
        )
    model = imitative.clone()
    previous = model.model_options.get("model_function_wrapper")
    model.set_model_unet_function_wrapper(patch.model_function_wrapper(previous))
    for key in patch.keys:
        model.set_model_attn1_replace(patch.attn1_replace(key), key[0], key[1], key[2])
    if hasattr(model, "set_additional_models"):
        model.set_additional_models(ADDITIONAL_MODELS_KEY, [reference])
    return model
