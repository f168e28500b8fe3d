"""UI workflow -> API prompt, as the ComfyUI frontend does it; and the shipped workflows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.workflow_format import (
    WorkflowError,
    set_widget,
    ui_to_api,
    widget_values_by_name,
    widgets_values_for,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"

INFO = {
    "Loader": {
        "input": {"required": {"ckpt_name": [["a.ckpt", "b.ckpt"]]}},
        "output": ["MODEL", "CLIP"],
        "output_name": ["MODEL", "CLIP"],
    },
    "Image": {
        "input": {"required": {"image": [["x.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_name": ["IMAGE", "MASK"],
    },
    "Patch": {
        "input": {"required": {"model": ["MODEL"], "scale": ["FLOAT", {"default": 1.3}]}},
        "output": ["MODEL"],
        "output_name": ["MODEL"],
    },
    "Encode": {
        "input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]}},
        "output": ["CONDITIONING"],
        "output_name": ["CONDITIONING"],
    },
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL"],
                "seed": ["INT", {"default": 0}],
                "steps": ["INT", {"default": 20}],
                "positive": ["CONDITIONING"],
                "sampler_name": [["euler", "ddim"]],
            },
            "optional": {
                "denoise": ["FLOAT", {"default": 1.0}],
                "extra": ["INT", {"forceInput": True}],
            },
        },
        "output": ["LATENT"],
        "output_name": ["LATENT"],
    },
}


def node(id_, type_, widgets=None, inputs=(), outputs=(), mode=0):
    return {
        "id": id_,
        "type": type_,
        "mode": mode,
        "widgets_values": widgets or [],
        "inputs": [dict(i) for i in inputs],
        "outputs": [dict(o) for o in outputs],
    }


def graph(mode_patch=0):
    return {
        "nodes": [
            node(
                1,
                "Loader",
                ["b.ckpt"],
                outputs=[
                    {"name": "MODEL", "type": "MODEL", "links": [1]},
                    {"name": "CLIP", "type": "CLIP", "links": [2]},
                ],
            ),
            node(
                2,
                "Patch",
                [2.0],
                inputs=[{"name": "model", "type": "MODEL", "link": 1}],
                outputs=[{"name": "MODEL", "type": "MODEL", "links": [3]}],
                mode=mode_patch,
            ),
            node(3, "Encode", ["typed text"], inputs=[{"name": "clip", "type": "CLIP", "link": 2}]),
            node(
                4,
                "Sampler",
                [7, "randomize", 3, "ddim", 0.5],
                inputs=[
                    {"name": "model", "type": "MODEL", "link": 3},
                    {"name": "positive", "type": "CONDITIONING", "link": 4},
                ],
            ),
            node(5, "Note", ["read me"]),
        ],
        "links": [
            [1, 1, 0, 2, 0, "MODEL"],
            [2, 1, 1, 3, 0, "CLIP"],
            [3, 2, 0, 4, 0, "MODEL"],
            [4, 3, 0, 4, 1, "CONDITIONING"],
        ],
        "version": 0.4,
    }


def test_widget_values_map_to_inputs_in_definition_order_skipping_the_seed_control():
    prompt = ui_to_api(graph(), INFO)
    assert prompt["4"] == {
        "class_type": "Sampler",
        "inputs": {
            "seed": 7,
            "steps": 3,
            "sampler_name": "ddim",
            "denoise": 0.5,
            "model": ["2", 0],
            "positive": ["3", 0],
        },
    }
    assert prompt["1"]["inputs"] == {"ckpt_name": "b.ckpt"}
    assert "5" not in prompt, "Note nodes are frontend-only"


def test_widgets_values_written_like_the_frontend_read_back_by_name():
    values = widgets_values_for(INFO["Sampler"], {"seed": 5, "denoise": 0.7})
    assert values == [5, "fixed", 20, "euler", 0.7]  # forceInput 'extra' is a socket
    upload = widgets_values_for(INFO["Image"], {"image": "x.png"})
    assert upload == ["x.png", "image"]
    assert widget_values_by_name({"widgets_values": upload}, INFO["Image"]) == {"image": "x.png"}


def test_a_bypassed_node_passes_its_same_type_input_through():
    prompt = ui_to_api(graph(mode_patch=4), INFO)
    assert "2" not in prompt
    assert prompt["4"]["inputs"]["model"] == ["1", 0]


def test_a_muted_source_leaves_the_input_unconnected():
    prompt = ui_to_api(graph(mode_patch=2), INFO)
    assert "2" not in prompt and "model" not in prompt["4"]["inputs"]


def test_a_converted_widget_takes_the_linked_value_and_primitives_and_reroutes_resolve():
    wf = graph()
    wf["nodes"].append(
        node(
            6,
            "PrimitiveNode",
            ["from primitive"],
            outputs=[{"name": "STRING", "type": "STRING", "links": [5]}],
        )
    )
    wf["nodes"].append(
        node(
            7,
            "Reroute",
            [],
            inputs=[{"name": "", "type": "*", "link": 6}],
            outputs=[{"name": "", "type": "CONDITIONING", "links": [7]}],
        )
    )
    wf["nodes"][2]["inputs"].append(
        {"name": "text", "type": "STRING", "link": 5, "widget": {"name": "text"}}
    )
    wf["nodes"][3]["inputs"][1]["link"] = 7
    wf["links"] += [
        [5, 6, 0, 3, 1, "STRING"],
        [6, 3, 0, 7, 0, "CONDITIONING"],
        [7, 7, 0, 4, 1, "CONDITIONING"],
    ]
    prompt = ui_to_api(wf, INFO)
    assert prompt["3"]["inputs"]["text"] == "from primitive"
    assert prompt["4"]["inputs"]["positive"] == ["3", 0]
    assert "6" not in prompt and "7" not in prompt


def test_unknown_node_type_is_named_in_the_error():
    wf = graph()
    wf["nodes"][1]["type"] = "SomePackNode"
    with pytest.raises(WorkflowError, match=r"node 2 \(SomePackNode\).*Install"):
        ui_to_api(wf, INFO)


def test_set_widget_changes_one_value_and_keeps_the_rest():
    wf = graph()
    set_widget(wf, 4, "steps", 1, INFO)
    assert wf["nodes"][3]["widgets_values"] == [7, "randomize", 1, "ddim", 0.5]
    with pytest.raises(WorkflowError, match="no widget 'model'"):
        set_widget(wf, 4, "model", 1, INFO)


def _builder():
    from support.workflows import workflow_builder

    return workflow_builder()


def test_shipped_workflows_images_and_thumbnails_are_what_the_generator_makes():
    if not os.environ.get("ANALOGIST_COMFYUI_HOST"):
        pytest.skip(
            "the shipped workflows are generated from ComfyUI 0.30.0's node definitions; "
            "this run's host is the 2024 one (its loading of them is tested in tests/host)"
        )
    builder = _builder()
    files = builder.render_all(builder.node_definitions())
    stale = [
        str(p.relative_to(ROOT)) for p, data in files.items() if not builder.is_current(p, data)
    ]
    assert not stale, f"run: .venv/bin/python workflows/build_workflows.py  (stale: {stale})"
    assert {p.name for p in files} >= {f"{name}.json" for name in builder.WORKFLOWS} | {
        f"{name}.jpg" for name in builder.WORKFLOWS
    }


@pytest.mark.parametrize(
    "name",
    [
        "analogist_manual_prompt",
        "analogist",
        "analogist_aligned_with_b",
        "analogist_lora_controlnet",
        "analogist_best_of_n",
        "analogist_sdxl",
        "analogist_region",
        "analogist_two_examples",
        "analogist_flux_fill",
        "analogist_exact_ddim",
        "reversion_learn",
        "reversion_generate",
    ],
)
def test_shipped_workflow_links_connect_matching_types_and_carry_a_note(name):
    wf = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, origin, slot, target, target_slot, kind in wf["links"]:
        assert nodes[origin]["outputs"][slot]["type"] == kind
        assert link_id in nodes[origin]["outputs"][slot]["links"]
        socket = nodes[target]["inputs"][target_slot]
        assert socket["link"] == link_id and socket["type"] == kind
    notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1 and "checkpoint" in notes[0]["widgets_values"][0].lower()


@pytest.fixture(scope="module")
def definitions():
    return _builder().node_definitions()


def test_runner_puts_the_users_inputs_into_the_manual_workflow(definitions, tmp_path):
    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings

    settings = Settings(
        a=tmp_path / "a.png",
        a_prime=tmp_path / "a2.png",
        b=[tmp_path / "b.png"],
        out=tmp_path,
        checkpoint="model.safetensors",
        prompt="a fox, best quality",
        steps=3,
        cell=128,
        seed=7,
        denoise=0.7,
    )
    prompt = build_prompt(
        settings, definitions, {"a": "ua.png", "a_prime": "ua2.png", "b": "ub.png"}
    )
    loads = {
        v["_meta"]["title"]: v["inputs"]["image"]
        for v in prompt.values()
        if v["class_type"] == "LoadImage"
    }
    assert loads == {
        "A (example, before)": "ua.png",
        "A' (example, after)": "ua2.png",
        "B (to change)": "ub.png",
    }
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["CheckpointLoaderSimple"]["ckpt_name"] == "model.safetensors"
    assert (
        by_type["KSampler"]["steps"],
        by_type["KSampler"]["seed"],
        by_type["KSampler"]["denoise"],
    ) == (3, 7, 0.7)
    assert by_type["KSampler"]["cfg"] == 15.0  # untouched paper value
    assert (
        by_type["AnalogistGridCompose"]["cell_width"]
        == 128
        == by_type["AnalogistGridCompose"]["cell_height"]
    )
    texts = sorted(
        v["inputs"]["text"] for v in prompt.values() if v["class_type"] == "CLIPTextEncode"
    )
    assert texts[1] == "a fox, best quality" and texts[0].startswith("Messy,")


def test_runner_points_the_vlm_workflow_at_the_chosen_server(definitions, tmp_path):
    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings

    settings = Settings(
        a=tmp_path / "a.png",
        a_prime=tmp_path / "a2.png",
        b=[tmp_path / "b.png"],
        out=tmp_path,
        checkpoint="m.ckpt",
        workflow="vlm",
        vlm_base_url="http://127.0.0.1:11434/v1",
        vlm_model="qwen2.5vl",
    )
    prompt = build_prompt(settings, definitions, {"a": "a.png", "a_prime": "a2.png", "b": "b.png"})
    (vlm_id,) = [k for k, v in prompt.items() if v["class_type"] == "AnalogistGPT4VPrompt"]
    assert prompt[vlm_id]["inputs"]["base_url"] == "http://127.0.0.1:11434/v1"
    assert prompt[vlm_id]["inputs"]["model"] == "qwen2.5vl"
    assert prompt[vlm_id]["inputs"]["suffix"] == ", best quality, extremely detailed"
    assert [
        str(v["inputs"]["text"])
        for v in prompt.values()
        if v["class_type"] == "CLIPTextEncode" and isinstance(v["inputs"]["text"], list)
    ] == [str([vlm_id, 0])]


def test_region_workflow_feeds_bs_own_mask_to_b_region_and_cam_keeps_text_in_it(definitions):
    from comfyui_analogist.analogist_cli.workflow_format import ui_to_api
    from PIL import Image

    prompt = ui_to_api(json.loads((WORKFLOWS / "analogist_region.json").read_text()), definitions)
    by_type = {v["class_type"]: (k, v["inputs"]) for k, v in prompt.items()}
    (b_id,) = [k for k, v in prompt.items() if v.get("_meta", {}).get("title") == "B (to change)"]
    assert prompt[b_id]["inputs"]["image"] == "analogist_example_b_region.png"
    # B's Load Image: IMAGE into b, its MASK (the painted region) into b_region.
    assert by_type["AnalogistGridCompose"][1]["b"] == [b_id, 0]
    assert by_type["AnalogistGridCompose"][1]["b_region"] == [b_id, 1]
    assert by_type["AnalogistCAMPatch"][1]["text_only_in_region"] is True
    assert by_type["AnalogistGridCrop"][1]["feather"] == 4
    # The example is B itself with part of it transparent (what the mask editor saves).
    painted = Image.open(WORKFLOWS / "images" / "analogist_example_b_region.png")
    b = Image.open(WORKFLOWS / "images" / "analogist_example_b.png")
    assert painted.mode == "RGBA" and painted.convert("RGB").tobytes() == b.convert("RGB").tobytes()
    assert 0 < painted.getchannel("A").histogram()[0] < 256 * 256 // 2
    # The other workflows leave the region out, and CAM as the paper has it.
    plain = ui_to_api(
        json.loads((WORKFLOWS / "analogist_manual_prompt.json").read_text()), definitions
    )
    by_type = {v["class_type"]: v["inputs"] for v in plain.values()}
    assert "b_region" not in by_type["AnalogistGridCompose"] and "LoadImageMask" not in by_type
    assert by_type["AnalogistCAMPatch"]["text_only_in_region"] is False


@pytest.mark.parametrize("workflow", ["manual", "vlm"])
def test_runner_puts_the_b_region_mask_on_grid_compose(definitions, tmp_path, workflow):
    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings

    settings = Settings(
        a=tmp_path / "a.png",
        a_prime=tmp_path / "a2.png",
        b=[tmp_path / "b.png"],
        out=tmp_path,
        checkpoint="m.ckpt",
        workflow=workflow,
        b_region=tmp_path / "r.png",
    )
    images = {"a": "a.png", "a_prime": "a2.png", "b": "b.png"}
    without = build_prompt(settings, definitions, images)
    prompt = build_prompt(settings, definitions, {**images, "b_region": "region_1.png"})
    (compose_id,) = [k for k, v in prompt.items() if v["class_type"] == "AnalogistGridCompose"]
    source_id, slot = prompt[compose_id]["inputs"]["b_region"]
    assert slot == 0 and prompt[source_id]["class_type"] == "LoadImageMask"
    assert prompt[source_id]["inputs"] == {"image": "region_1.png", "channel": "red"}
    assert source_id not in without and "b_region" not in without[compose_id]["inputs"]
    assert set(prompt) - {source_id} == set(without)


def test_runner_chains_example_pairs_into_grid_compose_and_the_vlm(definitions, tmp_path):
    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings

    images = {
        "a": "a.png",
        "a_prime": "ap.png",
        "b": "b.png",
        "a2": "x2.png",
        "a2_prime": "x2p.png",
        "a3": "x3.png",
        "a3_prime": "x3p.png",
    }
    settings = Settings(
        a=tmp_path / "a.png",
        a_prime=tmp_path / "ap.png",
        b=[tmp_path / "b.png"],
        out=tmp_path,
        checkpoint="m.ckpt",
        workflow="vlm",
        examples=[
            (tmp_path / "x2.png", tmp_path / "x2p.png"),
            (tmp_path / "x3.png", tmp_path / "x3p.png"),
        ],
    )
    prompt = build_prompt(settings, definitions, images)
    (compose_id,) = [k for k, v in prompt.items() if v["class_type"] == "AnalogistGridCompose"]
    # Follow the chain back from Grid Compose: pair 3's node, then pair 2's, then nothing.
    seen = []
    link = prompt[compose_id]["inputs"]["examples"]
    while link is not None:
        pair = prompt[link[0]]
        assert pair["class_type"] == "AnalogistExamplePair"
        seen.append(
            tuple(prompt[pair["inputs"][r][0]]["inputs"]["image"] for r in ("a", "a_prime"))
        )
        link = pair["inputs"].get("examples")
    assert seen == [("x3.png", "x3p.png"), ("x2.png", "x2p.png")]
    (vlm,) = [v for v in prompt.values() if v["class_type"] == "AnalogistGPT4VPrompt"]
    assert vlm["inputs"]["layout"] == [compose_id, 3]
    assert definitions["AnalogistGridCompose"]["output"][3] == "ANALOGIST_LAYOUT"
    # Without --example the prompt has no Example Pair and no examples input.
    plain = build_prompt(
        Settings(
            a=tmp_path / "a.png",
            a_prime=tmp_path / "ap.png",
            b=[tmp_path / "b.png"],
            out=tmp_path,
            checkpoint="m.ckpt",
        ),
        definitions,
        images,
    )
    assert not [v for v in plain.values() if v["class_type"] == "AnalogistExamplePair"]


def test_the_upload_buttons_value_is_saved_after_all_widgets_and_read_from_either_place():
    """Load Image (as Mask): the frontend saves image, channel, then the upload button's
    "image" (tests/frontend checks the positions against the real frontend); files from
    older frontends have it right after the image."""
    info = {
        "input": {
            "required": {
                "image": [["m.png", "n.png"], {"image_upload": True}],
                "channel": [["alpha", "red", "green", "blue"]],
            }
        },
        "output": ["MASK"],
        "output_name": ["MASK"],
    }
    assert widgets_values_for(info, {"image": "n.png", "channel": "red"}) == [
        "n.png",
        "red",
        "image",
    ]
    for saved in (["n.png", "red", "image"], ["n.png", "image", "red"]):
        assert widget_values_by_name({"widgets_values": saved}, info) == {
            "image": "n.png",
            "channel": "red",
        }
    # A next widget whose value happens to read "image" is still that widget's value.
    text = {
        "input": {
            "required": {"image": [["m.png"], {"image_upload": True}], "label": ["STRING", {}]}
        },
        "output": [],
        "output_name": [],
    }
    assert widget_values_by_name({"widgets_values": ["m.png", "image", "image"]}, text) == {
        "image": "m.png",
        "label": "image",
    }
    wf = {
        "nodes": [
            {
                "id": 1,
                "type": "Mask",
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "widgets_values": ["m.png", "alpha", "image"],
            }
        ],
        "links": [],
    }
    set_widget(wf, 1, "channel", "green", {"Mask": info})
    assert wf["nodes"][0]["widgets_values"] == ["m.png", "green", "image"]
