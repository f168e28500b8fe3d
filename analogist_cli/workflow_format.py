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

Writing (for workflows/build_workflows.py): :class:`Graph` takes nodes, widget values by
input name and links by output name, and :meth:`Graph.to_ui` lays them out in the format
the frontend saves (the same rules as reading, in reverse).

No ComfyUI import: the node definitions come in as data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_VALUES = ("image",)
MODE_ALWAYS, MODE_MUTED, MODE_BYPASSED = 0, 2, 4
# Frontend-only nodes: never sent to the server.
NOTE_TYPES = ("Note", "MarkdownNote")
VIRTUAL_TYPES = NOTE_TYPES + ("Reroute", "PrimitiveNode")


# The current frontend's (1.47) geometry: a node's title bar is drawn above its ``pos``; a
# group's title band is about this high; "fit view" (Templates opens a workflow that way)
# leaves a quarter of the canvas free; below this zoom nodes are drawn without their text.
TITLE_HEIGHT = 30
GROUP_HEADER = 44
GROUP_PAD = 16
FIT_FRACTION = 0.75
LOW_QUALITY_ZOOM = 0.6
VIEWPORT = (1920, 1080)


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
        if (
            has_upload_value(spec)
            and index < len(saved)
            and saved[index] in UPLOAD_VALUES
            and (not trailing_upload or index == len(saved) - 1)
        ):
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
                link = [
                    link["id"],
                    link["origin_id"],
                    link["origin_slot"],
                    link["target_id"],
                    link["target_slot"],
                    link.get("type"),
                ]
            link_id, origin, origin_slot, target, target_slot, kind = link[:6]
            self.links[int(link_id)] = (
                int(origin),
                int(origin_slot),
                int(target),
                int(target_slot),
                kind,
            )

    def source(self, link_id: int, depth: int = 0) -> tuple[int, int] | None:
        """The real (node, output slot) behind a link: through reroutes and bypassed nodes.

        ``None`` when the input ends up unconnected (a muted source, a dangling reroute).
        """
        if depth > len(self.nodes) + 1:
            raise WorkflowError(
                "the workflow's links form a loop through reroutes or bypassed nodes"
            )
        if link_id not in self.links:
            raise WorkflowError(f"link {link_id} is used by a node but missing from the links list")
        origin, slot, _, _, kind = self.links[link_id]
        node = self.nodes.get(origin)
        if node is None:
            raise WorkflowError(
                f"link {link_id} comes from node {origin}, which is not in the workflow"
            )
        if node["type"] == "Reroute":
            upstream = (node.get("inputs") or [{}])[0].get("link")
            return None if upstream is None else self.source(upstream, depth + 1)
        mode = node.get("mode", MODE_ALWAYS)
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASSED:
            inputs = node.get("inputs") or []
            out_type = kind or (
                (node.get("outputs") or [])[slot].get("type") if node.get("outputs") else None
            )
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


# -- writing: a compact description of a UI graph -> the frontend's format -----------------
@dataclass(frozen=True)
class Out:
    node: Node
    slot: int

    @property
    def type(self) -> str:
        return self.node.info["output"][self.slot]


@dataclass(eq=False)
class Node:
    id: int
    type: str
    pos: tuple[int, int]
    info: dict
    title: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Out] = field(default_factory=dict)
    size: tuple[int, int] | None = None
    text: str | None = None  # Note nodes
    color: tuple[str, str] | None = None
    # The files a loader node names, for the frontend's missing-model dialog (Download):
    # [{"name": file, "url": https URL, "directory": models/ folder}], saved in properties.
    models: list[dict[str, str]] | None = None
    control: str = "fixed"  # the "control after generate" value saved after a seed

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as the frontend draws it: the title bar sits above ``pos``."""
        width, height = self.size or Graph._size(self)
        return (self.pos[0], self.pos[1] - TITLE_HEIGHT, self.pos[0] + width, self.pos[1] + height)

    def out(self, name: str | int) -> Out:
        if isinstance(name, int):
            return Out(self, name)
        names = self.info["output_name"]
        if name in names:
            return Out(self, names.index(name))
        return Out(self, self.info["output"].index(name))


@dataclass
class Group:
    """A LiteGraph group: a titled box behind some nodes, laid out as columns of nodes."""

    title: str | None  # None: the columns are placed, without a box
    columns: list[list[Node]]
    color: str = "#3f789e"


class Graph:
    def __init__(self, defs: dict[str, dict]):
        self.defs = defs
        self.nodes: list[Node] = []
        self.groups: list[tuple[str, tuple[float, float, float, float], str]] = []

    def arrange(self, rows: list[list[Group]], gap: int = 24) -> None:
        """Place every node: rows of groups, each group columns of nodes stacked top down.

        Nothing can overlap: a column is as wide as its widest node, a node starts below the
        one above it (title bar included), groups and rows keep ``gap`` apart.
        """
        placed = {
            id(n) for row in rows for group in row for column in group.columns for n in column
        }
        missing = [f"{n.id} {n.type}" for n in self.nodes if id(n) not in placed]
        if missing:
            raise ValueError(f"nodes not arranged: {missing}")
        y = 0.0
        for row in rows:
            x, row_height = 0.0, 0.0
            for group in row:
                pad = GROUP_PAD if group.title else 0
                top = GROUP_HEADER if group.title else 0
                cx = x + pad
                inner_height = 0.0
                for column in group.columns:
                    cy = y + top
                    width = 0.0
                    for node in column:
                        w, h = node.size or self._size(node)
                        node.pos = (int(cx), int(cy + TITLE_HEIGHT))
                        cy += TITLE_HEIGHT + h + gap
                        width = max(width, w)
                    inner_height = max(inner_height, cy - gap - (y + top))
                    cx += width + gap
                group_width = cx - gap + pad - x
                group_height = top + inner_height + pad
                if group.title:
                    self.groups.append(
                        (group.title, (x, y, group_width, group_height), group.color)
                    )
                x += group_width + gap
                row_height = max(row_height, group_height)
            y += row_height + gap

    def bounds(self) -> tuple[float, float, float, float]:
        boxes = [n.bounds() for n in self.nodes]
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def add(self, kind: str, pos: tuple[int, int], title: str | None = None, **inputs: Any) -> Node:
        info = self.defs[kind]
        widgets = dict(widget_inputs(info))
        sockets = dict(socket_inputs(info))
        node = Node(len(self.nodes) + 1, kind, pos, info, title)
        for name, value in inputs.items():
            if isinstance(value, Out):
                if name not in widgets and name not in sockets:
                    raise KeyError(f"{kind} has no input {name!r}")
                node.links[name] = value
            elif name in widgets:
                node.values[name] = value
            else:
                raise KeyError(f"{kind} has no widget {name!r}")
        self.nodes.append(node)
        return node

    def note(self, pos: tuple[int, int], text: str, size: tuple[int, int] = (440, 330)) -> Node:
        """A markdown note (the frontend's MarkdownNote: headings, links, lists)."""
        node = Node(
            len(self.nodes) + 1,
            "MarkdownNote",
            pos,
            {"input": {}, "output": [], "output_name": []},
            title="Read me",
            size=size,
            text=text,
            color=("#432", "#653"),
        )
        self.nodes.append(node)
        return node

    # -- serialisation ---------------------------------------------------------------------
    def _order(self) -> list[Node]:
        done: list[Node] = []
        pending = list(self.nodes)
        while pending:
            ready = [n for n in pending if all(o.node in done for o in n.links.values())]
            if not ready:
                raise ValueError("cycle in workflow description")
            done.extend(ready)
            pending = [n for n in pending if n not in ready]
        return done

    def to_ui(self, extra_info: dict | None = None) -> dict:
        order = {n.id: i for i, n in enumerate(self._order())}
        links: list[list] = []
        out_links: dict[tuple[int, int], list[int]] = {}
        serial_nodes = []
        for node in self.nodes:
            entry: dict[str, Any] = {
                "id": node.id,
                "type": node.type,
                "pos": list(node.pos),
                "size": list(node.size or self._size(node)),
                "flags": {},
                "order": order[node.id],
                "mode": 0,
            }
            if node.type in NOTE_TYPES:
                entry.update(properties={"text": ""}, widgets_values=[node.text])
            else:
                inputs: list[dict[str, Any]] = []
                widget_names = {name for name, _ in widget_inputs(node.info)}
                for name, kind in socket_inputs(node.info):
                    inputs.append({"name": name, "type": kind, "link": None})
                for name in node.links:  # widgets converted to inputs, after the sockets
                    if name in widget_names:
                        spec_type = dict(widget_inputs(node.info))[name][0]
                        inputs.append(
                            {
                                "name": name,
                                "type": spec_type,
                                "link": None,
                                "widget": {"name": name},
                            }
                        )
                for slot, socket in enumerate(inputs):
                    source = node.links.get(socket["name"])
                    if source is None:
                        continue
                    link_id = len(links) + 1
                    links.append([link_id, source.node.id, source.slot, node.id, slot, source.type])
                    socket["link"] = link_id
                    out_links.setdefault((source.node.id, source.slot), []).append(link_id)
                entry["inputs"] = inputs
                entry["outputs"] = [
                    {"name": name, "type": kind, "links": None, "slot_index": i}
                    for i, (name, kind) in enumerate(
                        zip(node.info["output_name"], node.info["output"], strict=True)
                    )
                ]
                entry["properties"] = {"Node name for S&R": node.type}
                if node.models:
                    entry["properties"]["models"] = [dict(m) for m in node.models]
                entry["widgets_values"] = widgets_values_for(node.info, node.values, node.control)
            if node.title:
                entry["title"] = node.title
            if node.color:
                entry["color"], entry["bgcolor"] = node.color
            serial_nodes.append(entry)
        for entry in serial_nodes:
            for slot, output in enumerate(entry.get("outputs", [])):
                output["links"] = out_links.get((entry["id"], slot)) or None
        groups = [
            {
                "id": i + 1,
                "title": title,
                "bounding": [round(v) for v in box],
                "color": color,
                "font_size": 24,
                "flags": {},
            }
            for i, (title, box, color) in enumerate(self.groups)
        ]
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": serial_nodes,
            "links": links,
            "groups": groups,
            "config": {},
            # The saved view (a dropped file opens with it) is the one the frontend's "fit
            # view" gives (a template from the Templates browser opens with that): the whole
            # graph, centred, at 1920x1080 (tests/frontend checks the zoom and the titles).
            "extra": {"ds": fit_view(self.bounds()), **(extra_info or {})},
            "version": 0.4,
        }

    @staticmethod
    def _size(node: Node) -> tuple[int, int]:
        """At least the frontend's own size for the node (1.47 keeps a saved size as is)."""
        widgets = widget_inputs(node.info)
        sockets = max(len(socket_inputs(node.info)), len(node.info["output"]))
        height = 30 + 22 * sockets + 26 * len(widgets)
        width = WIDTHS.get(node.type, DEFAULT_WIDTH)
        for _, spec in widgets:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("multiline"):
                height += 90
                width = max(width, 360)
        if node.type == "LoadImage":
            height += 200  # the picture (the frontend scales it into the node)
        elif node.type in ("PreviewImage", "SaveImage"):
            height += 240
        return width, height


# Widths: the frontend's own (its computeSize, 1.47) plus a margin for longer file names.
DEFAULT_WIDTH = 280
WIDTHS = {
    "AnalogistRankCandidates": 420,
    "AnalogistMarkAndArrow": 370,
    "AnalogistGridCompose": 340,
    "AnalogistExamplePair": 340,
    "AnalogistDDIMSigmas": 340,
    "AnalogistDDIMSampler": 340,
    "AnalogistGridCrop": 320,
    "AnalogistCAMPatch": 300,
    "AnalogistSACPatch": 300,
    "AnalogistGPT4VPrompt": 360,
    "AnalogistReVersionLearn": 360,
    "LoraLoader": 300,
    "CheckpointLoaderSimple": 300,
}


def fit_view(
    bounds: tuple[float, float, float, float], viewport: tuple[int, int] = VIEWPORT
) -> dict[str, Any]:
    """The frontend's "fit view" (``DragAndScale.fitToBounds``, zoom 0.75) for these bounds
    (the nodes' boxes, which the frontend pads by 10)."""
    x0, y0, x1, y1 = bounds[0] - 10, bounds[1] - 10, bounds[2] + 10, bounds[3] + 10
    width, height = max(x1 - x0, 300), max(y1 - y0, 300)
    scale = min(FIT_FRACTION * viewport[0] / width, FIT_FRACTION * viewport[1] / height, 10.0)
    offset = [
        round(-x0 - (x1 - x0) / 2 + viewport[0] / scale / 2, 1),
        round(-y0 - (y1 - y0) / 2 + viewport[1] / scale / 2, 1),
    ]
    return {"scale": round(scale, 4), "offset": offset}


def node_bounds(node: dict) -> tuple[float, float, float, float]:
    """A saved node's box as drawn (title bar above ``pos``): (x0, y0, x1, y1)."""
    x, y = (
        node["pos"][:2] if isinstance(node["pos"], list) else (node["pos"]["0"], node["pos"]["1"])
    )
    width, height = node["size"][:2]
    return (x, y - TITLE_HEIGHT, x + width, y + height)


def overlapping_nodes(workflow: dict) -> list[str]:
    """Pairs of nodes whose drawn boxes (title bar included) overlap."""
    boxes = [(n, node_bounds(n)) for n in workflow["nodes"]]
    out = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            if ba[0] < bb[2] and bb[0] < ba[2] and ba[1] < bb[3] and bb[1] < ba[3]:
                out.append(
                    f"{a['id']} {a.get('title') or a['type']} / {b['id']} {b.get('title') or b['type']}"
                )
    return out
