"""ComfyUI workflows: the UI (frontend) format and the API prompt format.

A workflow saved by the ComfyUI frontend (what users drag in, ``"version": 0.4``) lists
nodes with positions, sockets and ``widgets_values``: the values of the node's widgets by
position, not by name. The server runs an *API prompt* instead:
``{node_id: {"class_type": ..., "inputs": {name: value or [source_id, slot]}}}``.

:func:`ui_to_api` converts the first into the second the way the frontend's
``graphToPrompt`` does, using the node definitions from ``/object_info``:

* widget values are matched to the node's widget inputs in definition order (required,
  then optional); an input declaring ``control_after_generate`` (or, when it does not say,
  an ``INT`` named ``seed``/``noise_seed``) is followed by its "control after generate" value,
  which is skipped; an ``image_upload`` combo adds its upload button's value after all the
  node's widgets (the frontend adds that button last), also skipped (read from either place);
* a link into an input, including a widget converted to an input, wins over the widget;
* Note / MarkdownNote nodes are dropped; Reroute and PrimitiveNode are resolved;
* muted nodes (mode 2) are dropped, bypassed ones (mode 4) pass an input of the same
  type straight through, as in the frontend.

No ComfyUI import: the node definitions come in as data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_VALUES = ("image",)
MODE_ALWAYS, MODE_MUTED, MODE_BYPASSED = 0, 2, 4
# Frontend-only nodes: never sent to the server.
NOTE_TYPES = ("Note", "MarkdownNote")
VIRTUAL_TYPES = NOTE_TYPES + ("Reroute", "PrimitiveNode")


class WorkflowError(ValueError):
    """A workflow that cannot be turned into a prompt; the message says which node and why."""


def _is_widget(spec: Any) -> bool:
    if not isinstance(spec, (list, tuple)) or not spec:
        return False
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if options.get("forceInput"):
        return False
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def input_specs(node_info: dict) -> Iterator[tuple[str, list]]:
    """(name, spec) of every visible input, required then optional, in definition order."""
    inputs = node_info.get("input", {})
    for section in ("required", "optional"):
        yield from (inputs.get(section) or {}).items()


def widget_inputs(node_info: dict) -> list[tuple[str, list]]:
    return [(name, spec) for name, spec in input_specs(node_info) if _is_widget(spec)]


def socket_inputs(node_info: dict) -> list[tuple[str, str]]:
    """(name, type) of the inputs drawn as sockets (not widgets)."""
    return [(name, spec[0]) for name, spec in input_specs(node_info) if not _is_widget(spec)]


def has_control_value(name: str, spec: list) -> bool:
    """Does the frontend add a "control after generate" widget after this one?

    As ComfyUI's frontend (1.47) decides: an input's own ``control_after_generate`` option
    when it is set (``False`` means none); otherwise only an INT named seed or noise_seed.
    (The 2024 frontend adds one to every such INT even when told ``False``: nodes that want
    the same saved values everywhere declare ``True``.)
    """
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    declared = options.get("control_after_generate")
    if declared is not None:
        return bool(declared)
    return spec[0] == "INT" and name in SEED_NAMES


def control_values(name: str, spec: list, control: str = "fixed") -> list:
    """The values the frontend saves after this widget for its control widget(s).

    A COMBO's control comes with a filter box (saved as ``""``).
    """
    if not has_control_value(name, spec):
        return []
    return [control, ""] if isinstance(spec[0], (list, tuple)) or spec[0] == "COMBO" else [control]


def has_upload_value(spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(options.get("image_upload"))


def default_value(spec: list) -> Any:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, (list, tuple)):
        return kind[0] if kind else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind, None)


def widgets_values_for(node_info: dict, values: dict[str, Any], control: str = "fixed") -> list:
    """The ``widgets_values`` list the frontend saves for a node with these widget values."""
    out: list = []
    unknown = set(values) - {name for name, _ in widget_inputs(node_info)}
    if unknown:
        raise WorkflowError(f"not widget inputs of this node: {sorted(unknown)}")
    uploads = []
    for name, spec in widget_inputs(node_info):
        out.append(values[name] if name in values else default_value(spec))
        out.extend(control_values(name, spec, control))
        if has_upload_value(spec):
            uploads.append(UPLOAD_VALUES[0])
    # The frontend adds the upload button after the node's own widgets, so its value comes
    # last (Load Image (as Mask): image, channel, then "image").
    return out + uploads


def widget_values_by_name(node: dict, node_info: dict) -> dict[str, Any]:
    """Map a UI node's ``widgets_values`` to its widget input names."""
    saved = node.get("widgets_values")
    if saved is None:
        return {}
    if isinstance(saved, dict):  # some frontends save named values
        return dict(saved)
    values: dict[str, Any] = {}
    index = 0
    # Today's frontend saves the upload button's value last; older files have it right
    # after its combo. A trailing upload value means the former: then a value right after
    # the combo is the next widget's, even if it reads "image".
    trailing_upload = saved[-1] in UPLOAD_VALUES if saved else False
    for name, spec in widget_inputs(node_info):
        if index >= len(saved):
            break  # saved by an older node version: the server fills in defaults
        values[name] = saved[index]
        index += 1
        if has_control_value(name, spec) and index < len(saved) and saved[index] in CONTROL_VALUES:
            index += len(control_values(name, spec))
        if (has_upload_value(spec) and index < len(saved) and saved[index] in UPLOAD_VALUES
                and (not trailing_upload or index == len(saved) - 1)):
            index += 1
    return values


def _describe(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(title) if title else ''})"


class _Graph:
    def __init__(self, workflow: dict):
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            raise WorkflowError(
                "not a ComfyUI UI workflow (no 'nodes' list); API-format prompts need no conversion"
            )
        self.nodes = {int(n["id"]): n for n in workflow["nodes"]}
        self.links: dict[int, tuple[int, int, int, int, str]] = {}
        for link in workflow.get("links") or []:
            if isinstance(link, dict):  # newer serialisation
                link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                        link["target_slot"], link.get("type")]
            link_id, origin, origin_slot, target, target_slot, kind = link[:6]
            self.links[int(link_id)] = (int(origin), int(origin_slot), int(target), int(target_slot), kind)

    def source(self, link_id: int, depth: int = 0) -> tuple[int, int] | None:
        """The real (node, output slot) behind a link: through reroutes and bypassed nodes.

        ``None`` when the input ends up unconnected (a muted source, a dangling reroute).
        """
        if depth > len(self.nodes) + 1:
            raise WorkflowError("the workflow's links form a loop through reroutes or bypassed nodes")
        if link_id not in self.links:
            raise WorkflowError(f"link {link_id} is used by a node but missing from the links list")
        origin, slot, _, _, kind = self.links[link_id]
        node = self.nodes.get(origin)
        if node is None:
            raise WorkflowError(f"link {link_id} comes from node {origin}, which is not in the workflow")
        if node["type"] == "Reroute":
            upstream = (node.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else self.source(upstream, depth + 1)
        mode = node.get("mode", MODE_ALWAYS)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASSED:
            inputs = node.get("inputs") or []
            out_type = kind or ((node.get("outputs") or [])[slot].get("type") if node.get("outputs") else None)
            # The frontend prefers the input at the same position, then any of the same type.
            candidates = ([inputs[slot]] if slot < len(inputs) else []) + list(inputs)
            for candidate in candidates:
                if candidate.get("link") is not None and candidate.get("type") == out_type:
                    return self.source(candidate["link"], depth + 1)
            return None
        return origin, slot


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API prompt the ComfyUI frontend would queue for this UI workflow."""
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for node_id, node in sorted(graph.nodes.items()):
        kind = node.get("type")
        if kind in VIRTUAL_TYPES or node.get("mode", MODE_ALWAYS) in (MODE_MUTED, MODE_BYPASSED):
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowError(
                f"{_describe(node)}: this ComfyUI has no node type {kind!r}. Install the custom "
                "node pack that provides it (ComfyUI-Manager: 'Install Missing Custom Nodes')."
            )
        inputs: dict[str, Any] = widget_values_by_name(node, info)
        for socket in node.get("inputs") or []:
            link = socket.get("link")
            name = socket.get("name")
            if link is None:
                continue
            source = graph.source(link)
            if source is None:  # fed by a muted node: the frontend sends nothing
                inputs.pop(name, None)
                continue
            origin = graph.nodes[source[0]]
            if origin["type"] == "PrimitiveNode":
                inputs[name] = (origin.get("widgets_values") or [None])[0]
            else:
                inputs[name] = [str(source[0]), source[1]]
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            prompt[str(node_id)]["_meta"] = {"title": node["title"]}
    return prompt


def set_widget(workflow: dict, node_id: int, name: str, value: Any, object_info: dict) -> None:
    """Change one widget value of a UI workflow in place (by input name, like a user would)."""
    node = next((n for n in workflow["nodes"] if int(n["id"]) == int(node_id)), None)
    if node is None:
        raise WorkflowError(f"no node {node_id} in the workflow")
    info = object_info[node["type"]]
    values = widget_values_by_name(node, info)
    if name not in dict(widget_inputs(info)):
        raise WorkflowError(f"{_describe(node)} has no widget {name!r}")
    values[name] = value
    control = "fixed"
    saved = node.get("widgets_values") or []
    for item in saved:
        if item in CONTROL_VALUES:
            control = item
            break
    node["widgets_values"] = widgets_values_for(info, values, control)


def nodes_of_type(workflow: dict, kind: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n.get("type") == kind]


def copy_workflow(workflow: dict) -> dict:
    return copy.deepcopy(workflow)
