"""The two DDIM nodes: declared for ComfyUI (tooltips, help pages) and their refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from comfyui_analogist.analogist_sampling.ddim import DDIMScheduleError
from comfyui_analogist.nodes import FAILED_FAMILIES, NODE_CLASS_MAPPINGS, sampling
from support.sd15 import tiny_inpaint_model_patcher

ROOT = Path(__file__).resolve().parents[2]
NODE_IDS = ("AnalogistDDIMSigmas", "AnalogistDDIMSampler")


def test_nodes_are_registered_with_tooltips_descriptions_and_help_pages():
    assert "sampling" not in FAILED_FAMILIES
    for node_id in NODE_IDS:
        node = NODE_CLASS_MAPPINGS[node_id]
        assert node is sampling.NODE_CLASS_MAPPINGS[node_id]
        assert node.CATEGORY == "Analogist/sampling" and node.DESCRIPTION
        assert len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES)
        for name, spec in node.INPUT_TYPES()["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        help_page = ROOT / "web" / "docs" / f"{node_id}.md"
        assert help_page.is_file() and "strong" in help_page.read_text(), help_page
    required = NODE_CLASS_MAPPINGS["AnalogistDDIMSigmas"].INPUT_TYPES()["required"]
    assert list(required) == ["model", "steps", "strength"]
    assert required["steps"][1]["default"] == 50 and required["strength"][1]["default"] == 1.0


@pytest.fixture(scope="module")
def model():
    return tiny_inpaint_model_patcher(seed=0, in_channels=4)


def test_sigmas_node_refuses_a_strength_that_leaves_no_step(model):
    node = NODE_CLASS_MAPPINGS["AnalogistDDIMSigmas"]()
    with pytest.raises(DDIMScheduleError, match=r"strength: 0.01 of 50 steps leaves no step"):
        node.get_sigmas(model, 50, 0.01)


def test_sigmas_node_refuses_a_model_with_another_schedule(model):
    """A zero-terminal-SNR schedule patched in, as ComfyUI's ModelSamplingDiscrete node does
    (a cosine one on hosts without zsnr)."""
    import comfy.model_sampling as ms

    class ZeroSNR(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    patched = model.clone()
    sampling_object = (
        ZeroSNR(zsnr=True) if "zsnr" in ZeroSNR.__init__.__code__.co_varnames else None
    )
    if sampling_object is None:
        sampling_object = ZeroSNR()
        sampling_object._register_schedule(beta_schedule="cosine")
    patched.add_object_patch("model_sampling", sampling_object)
    with pytest.raises(DDIMScheduleError, match="model: "):
        NODE_CLASS_MAPPINGS["AnalogistDDIMSigmas"]().get_sigmas(patched, 50, 1.0)
