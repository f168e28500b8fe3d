"""Every shipped workflow, dropped into the real frontend as an artist does it.

Dropped as a file on the graph canvas (the frontend's own drop handler reads it), into
the frontend ComfyUI 0.30.0 pins, served by the real server with this pack installed.
What the frontend then shows is compared with what the file means: the node types
exist, every saved widget value sits on the widget it was saved for (by
``workflow_format.widget_values_by_name``, the definition our converter and workflow
builder share with the frontends), the node saves back what it loaded (nothing shifted
or dropped), no error toast or dialog comes up, and the pack logs no error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.workflow_format import widget_values_by_name

pytestmark = [pytest.mark.frontend, pytest.mark.host]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.json"))
EXTENSIONS = ("Analogist.GPT4VPrompt", "Analogist.RankCandidates", "Analogist.ReVersionLearn")
CONTROL_RULE = (
    "This frontend adds a control_after_generate widget (one saved value) after an INT "
    "input whose options set control_after_generate to anything truthy, or, when the "
    "options have no control_after_generate (absent or null), after an INT named exactly "
    "'seed' or 'noise_seed'; control_after_generate: False means no control widget."
)


def same(loaded, saved) -> bool:
    if isinstance(saved, bool) or isinstance(loaded, bool):
        return loaded is saved
    if isinstance(saved, (int, float)) and isinstance(loaded, (int, float)):
        return math.isclose(loaded, saved, rel_tol=1e-6, abs_tol=1e-9)
    return loaded == saved


def misplaced_values(saved_node: dict, loaded_node: dict, node_info: dict | None) -> list[str]:
    """Where the loaded node's widgets disagree with the values the file saved for them."""
    values = saved_node.get("widgets_values")
    if not isinstance(values, list):
        return []
    where = f"node {saved_node['id']} ({saved_node['type']})"
    widgets = {w["name"]: w["value"] for w in loaded_node["widgets"]}
    problems = []
    if node_info is not None:
        for name, value in widget_values_by_name(saved_node, node_info).items():
            if name not in widgets:
                problems.append(f"{where}: no widget {name!r} for its saved value {value!r}")
            elif not same(widgets[name], value):
                problems.append(
                    f"{where}: widget {name!r} = {widgets[name]!r}, the file saved {value!r}"
                )
    # Nothing shifted or dropped: the node saves back the file's values (and defaults for
    # any widget the file predates, after them).
    back = loaded_node["saved"] or []
    if len(back) < len(values) or not all(same(a, b) for a, b in zip(back, values, strict=False)):
        problems.append(
            f"{where}: {len(values)} saved values {values!r} load as {len(back)} widget values {back!r}"
        )
    return problems


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_loads_as_dropped_with_every_saved_value_on_its_widget(
    frontend, frontend_server, path
):
    saved = json.loads(path.read_text())
    frontend.drop_workflow(path)
    shot = frontend.screenshot(f"{path.stem}-loaded")
    loaded = {n["id"]: n for n in frontend.nodes()}
    see = f"\n(screenshot: {shot})"

    missing = [f"node {i} {n['type']}" for i, n in loaded.items() if not n["registered"]]
    assert not missing, f"{path.name}: node types the frontend does not know: {missing}{see}"
    assert not frontend.problems_shown(), (
        f"{path.name}: the frontend reported {frontend.problems_shown()}{see}"
    )

    problems = []
    for node in saved["nodes"]:
        problems += misplaced_values(
            node, loaded[str(node["id"])], frontend_server.info.get(node["type"])
        )
    assert not problems, (
        f"{path.name}: saved widget values do not land on their widgets in the current frontend. "
        f"{CONTROL_RULE}\n" + "\n".join(problems) + see
    )
    assert not frontend.console.from_pack(), f"the pack logged: {frontend.console.from_pack()}{see}"


def test_api_key_env_shows_as_unused_and_keeps_an_old_workflows_value(
    frontend, frontend_server, tmp_path
):
    """Issue 22: the dead api_key_env box must not look like the place for a key (the
    frontend shows the input's display_name as its label), yet an older workflow's value
    (OPENAI_API_KEY, the old default) still lands on it and the rest keep their places."""
    from comfyui_analogist.analogist_cli.workflow_format import set_widget

    workflow = json.loads((WORKFLOWS / "analogist.json").read_text())
    (vlm,) = [n for n in workflow["nodes"] if n["type"] == "AnalogistGPT4VPrompt"]
    info = frontend_server.info["AnalogistGPT4VPrompt"]
    set_widget(workflow, vlm["id"], "api_key_env", "OPENAI_API_KEY", frontend_server.info)
    old = tmp_path / "analogist_old.json"
    old.write_text(json.dumps(workflow))
    frontend.drop_workflow(old)
    widgets = frontend.page.evaluate(
        """() => {
            const node = app.rootGraph.nodes.find(n => n.type === 'AnalogistGPT4VPrompt');
            return node.widgets.map(w => ({name: w.name, label: w.label ?? null, value: w.value}));
        }"""
    )
    by_name = {w["name"]: w for w in widgets}
    assert "unused" in (by_name["api_key_env"]["label"] or ""), by_name["api_key_env"]
    for name, value in widget_values_by_name(vlm, info).items():
        if name in by_name:
            assert by_name[name]["value"] == value, (name, by_name[name], value)
    assert by_name["api_key_env"]["value"] == "OPENAI_API_KEY"


def test_pack_extension_registers_without_errors_or_internal_imports(frontend):
    missing = set(EXTENSIONS) - set(frontend.extension_names())
    assert not missing, f"not registered: {sorted(missing)}"
    assert not frontend.console.from_pack(), f"the pack logged: {frontend.console.from_pack()}"
    # Only this pack is installed, so any notice about an internal module is ours.
    assert not frontend.console.internal_module_notices(), (
        frontend.console.internal_module_notices()
    )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_saved_view_shows_every_node_title_clear_of_the_menus(frontend, path):
    """At 1920x1080, the view a workflow opens with leaves every node's title bar visible."""
    frontend.drop_workflow(path)
    shot = frontend.screenshot(f"{path.stem}-view")
    covered = frontend.covered_titles()
    assert not covered, (
        f"{path.name} opens with the view {frontend.view()} (extra.ds); these title bars are "
        "covered by the frontend's menus or off screen:\n"
        + "\n".join(covered)
        + f"\n(screenshot: {shot})"
    )


# Input specs whose widgets the frontend lays out differently; the node-builder in the
# page registers each as a one-input node, as ComfyUI registers the server's nodes.
CONTROL_CASES = {
    "seed": ["INT", {}],
    "seed_control_false": ["INT", {"control_after_generate": False}],
    "seed_control_true": ["INT", {"control_after_generate": True}],
    "seed_control_none": ["INT", {"control_after_generate": None}],
    "noise_seed": ["INT", {}],
    "my_seed": ["INT", {}],
    "count_control_true": ["INT", {"control_after_generate": True}],
    "strength_control_true": ["FLOAT", {"control_after_generate": True}],
    "choice_control_true": [["a", "b"], {"control_after_generate": True}],
}


def _input_name(case: str) -> str:
    return "seed" if case.startswith("seed") else case.split("_control")[0]


def test_converter_counts_saved_values_as_the_frontend_does(frontend, frontend_server):
    """The number of widgets_values the frontend saves for a node is what our converter expects.

    For every node this pack registers, and for the input specs where frontends differ
    (control_after_generate), the frontend's own node is created and serialized.
    """
    from comfyui_analogist.analogist_cli.workflow_format import widgets_values_for

    probes = {}
    for case, spec in CONTROL_CASES.items():
        name = _input_name(case)
        probes[f"AnalogistFrontendProbe_{case}"] = {
            "name": f"AnalogistFrontendProbe_{case}",
            "display_name": case,
            "category": "probe",
            "description": "",
            "python_module": "probe",
            "output_node": False,
            "input": {"required": {name: spec}},
            "input_order": {"required": [name]},
            "output": [],
            "output_name": [],
            "output_is_list": [],
        }
    ours = {k: v for k, v in frontend_server.info.items() if k.startswith("Analogist")}
    saved = frontend.page.evaluate(
        """async ([probes, ours]) => {
            for (const [name, def] of Object.entries(probes)) await app.registerNodeDef(name, def);
            const out = {};
            for (const name of [...Object.keys(probes), ...ours]) {
                const node = LiteGraph.createNode(name);
                out[name] = {
                    widgets: (node.widgets ?? []).map(w => w.name),
                    saved: node.serialize().widgets_values ?? [],
                };
            }
            return out;
        }""",
        [probes, sorted(ours)],
    )
    wrong = []
    for name, info in {**probes, **ours}.items():
        expected = widgets_values_for(info, {})
        if len(expected) != len(saved[name]["saved"]):
            wrong.append(
                f"{name}: the frontend saves {len(saved[name]['saved'])} values (widgets "
                f"{saved[name]['widgets']}), the converter expects {len(expected)}: {expected}"
            )
    assert not wrong, (
        CONTROL_RULE + " A COMBO with control_after_generate saves two extra values "
        "(control_after_generate and control_filter_list).\n" + "\n".join(wrong)
    )


def test_converter_places_the_upload_buttons_value_where_the_frontend_saves_it(
    frontend, frontend_server
):
    """Load Image and Load Image (as Mask) made by the frontend: the converter writes the
    same widgets_values, in the same order, and reads them back by name."""
    from comfyui_analogist.analogist_cli.workflow_format import (
        widget_values_by_name,
        widgets_values_for,
    )

    saved = frontend.page.evaluate(
        """(names) => Object.fromEntries(names.map(name => {
            const node = LiteGraph.createNode(name);
            return [name, node.serialize().widgets_values ?? []];
        }))""",
        ["LoadImage", "LoadImageMask"],
    )
    assert len(saved["LoadImageMask"]) == 3, saved
    for name, values in saved.items():
        info = frontend_server.info[name]
        by_name = widget_values_by_name({"widgets_values": values}, info)
        assert widgets_values_for(info, by_name) == values, (name, values)
    assert (
        widget_values_by_name(
            {"widgets_values": saved["LoadImageMask"]}, frontend_server.info["LoadImageMask"]
        )["channel"]
        == saved["LoadImageMask"][1]
    )
