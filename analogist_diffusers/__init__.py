"""Analogist's SAC and CAM for diffusers pipelines (optional; the ComfyUI nodes never import it).

The same exact, fused attention edits the ComfyUI nodes run (``analogist_attn.sac`` and
``analogist_attn.cam``), as diffusers attention processors:

* :func:`install_analogist` puts :class:`AnalogistSACProcessor` (self-attention) and
  :class:`AnalogistCAMProcessor` (cross-attention) on the chosen transformer blocks of a
  ``StableDiffusionInpaintPipeline``'s UNet (or a bare ``UNet2DConditionModel``), in the
  paper's numbering, and leaves every other processor as it was;
  :func:`remove_analogist` puts the previous processors back.
* :func:`run_analogy` solves A : A' :: B : ? end to end with the paper's defaults and
  returns B' as PIL images.

Import it as ``analogist_diffusers`` with the pack's folder on ``sys.path`` (or as
``comfyui_analogist.analogist_diffusers`` inside the pack). Needs ``diffusers``.
"""

from __future__ import annotations

INSTALL_HINT = (
    "analogist_diffusers needs the 'diffusers' package, which is not installed in this Python "
    "({python}). Install it with `python -m pip install diffusers` (tested with diffusers "
    "0.42.1 and 0.35.2), plus `transformers` for the text encoder of a pipeline. The ComfyUI "
    "nodes of the pack do not need it."
)

if __name__ == "analogist_diffusers":
    # Imported top level, with the pack's folder on sys.path: load the pack as one package
    # (as ComfyUI does) and hand out its copy, whose imports of the math packages resolve.
    from analogist import import_pack

    import_pack()
    from comfyui_analogist.analogist_diffusers import *  # noqa: F403
    from comfyui_analogist.analogist_diffusers import __all__  # type: ignore[attr-defined]  # noqa: F401
else:
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:
        import sys

        raise ImportError(INSTALL_HINT.format(python=sys.executable), name="diffusers") from exc

    from .pipeline import (
        PAPER_CFG,
        PAPER_NEGATIVE_PROMPT,
        PAPER_PROMPT_SUFFIX,
        PAPER_STEPS,
        PAPER_STRENGTH,
        run_analogy,
    )
    from .processors import (
        AnalogistCAMProcessor,
        AnalogistInstallation,
        AnalogistSACProcessor,
        TransformerLayer,
        install_analogist,
        remove_analogist,
        transformer_layers,
    )

    __all__ = [
        "INSTALL_HINT",
        "PAPER_CFG",
        "PAPER_NEGATIVE_PROMPT",
        "PAPER_PROMPT_SUFFIX",
        "PAPER_STEPS",
        "PAPER_STRENGTH",
        "AnalogistCAMProcessor",
        "AnalogistInstallation",
        "AnalogistSACProcessor",
        "TransformerLayer",
        "install_analogist",
        "remove_analogist",
        "run_analogy",
        "transformer_layers",
    ]
