"""Keep the per-node help pages (``web/docs/<NodeId>.md``) in step with the nodes' tooltips.

    .venv/bin/python scripts/build_node_help.py          # rewrite the generated part of each page
    .venv/bin/python scripts/build_node_help.py --check  # exit 1 if a page is missing or stale

ComfyUI's frontend (1.47, pinned by ComfyUI 0.30.0) shows a custom node's help in its node
help panel by fetching ``/extensions/<pack folder>/docs/<NodeId>/<locale>.md`` and then
``/extensions/<pack folder>/docs/<NodeId>.md``; ``/extensions/<pack folder>/`` serves the
pack's ``WEB_DIRECTORY`` (``web/``). So the pages live in ``web/docs/``.

Each page has two parts:

* the top, written by hand for artists (what the node does, what to change when the
  result is too weak or too strong, common errors and their fixes);
* the bottom, between the two markers below, generated here from the node's own
  ``INPUT_TYPES`` tooltips, ``OUTPUT_TOOLTIPS`` and ``DESCRIPTION``: the same words the
  canvas shows when hovering an input, so the page and the tooltips cannot drift apart
  (``tests/nodes/test_node_help.py`` fails when a page is stale).

The node definitions come from the ComfyUI tree ``ANALOGIST_COMFYUI_HOST`` names, else the
0.30.0 tree scripts/setup_env.sh puts in ``.cache/hosts``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "web" / "docs"
PACK = "comfyui_analogist"
DEFAULT_HOST = ROOT / ".cache" / "hosts" / "ComfyUI-0.30.0"

BEGIN = (
    "<!-- generated from the node's tooltips by scripts/build_node_help.py: do not edit below -->"
)
END = "<!-- end of generated part -->"


def _import_nodes() -> tuple[dict[str, type], dict[str, str]]:
    """The pack's registered nodes, imported as ComfyUI would (``comfyui_analogist``)."""
    if PACK not in sys.modules:
        if "comfy" not in sys.modules:
            host = Path(os.environ.get("ANALOGIST_COMFYUI_HOST") or DEFAULT_HOST)
            if (host / "main.py").is_file() and str(host) not in sys.path:
                sys.path.append(str(host))
            from comfy import options

            options.enable_args_parsing()
            saved = sys.argv
            sys.argv = [saved[0], "--cpu"]
            try:
                import comfy.cli_args  # noqa: F401  (parses the arguments once, at import)
            finally:
                sys.argv = saved
        sys.path.insert(0, str(ROOT))
        try:
            from analogist import import_pack
        finally:
            sys.path.remove(str(ROOT))
        import_pack()
    from comfyui_analogist.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    return NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    return f"`{value}`"


def _input_line(name: str, spec: tuple, optional: bool) -> str:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    facts: list[str] = []
    if isinstance(kind, (list, tuple)):
        facts.append("choice: " + " / ".join(f"`{c}`" for c in kind))
    else:
        facts.append(str(kind))
    if "default" in opts and not (kind == "STRING" and opts.get("multiline")):
        facts.append("default " + _plain(opts["default"]))
    if "min" in opts and "max" in opts:
        facts.append(f"{opts['min']} to {opts['max']}")
    if optional:
        facts.append("optional")
    tooltip = " ".join(str(opts.get("tooltip", "")).split())
    return f"- **{name}** ({', '.join(facts)}): {tooltip}"


def generated_part(cls: type) -> str:
    """The inputs, outputs and description of one node, from its own definition."""
    inputs = cls.INPUT_TYPES()
    lines = [BEGIN, "", "## Inputs", ""]
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            lines.append(_input_line(name, spec, optional=section == "optional"))
    lines += ["", "## Outputs", ""]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    tips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ("",) * len(names)
    for name, kind, tip in zip(names, cls.RETURN_TYPES, tips, strict=True):
        lines.append(f"- **{name}** ({kind}): {' '.join(tip.split())}")
    lines += ["", "## The node's description", ""]
    lines.append("\n\n".join(" ".join(p.split()) for p in _description(cls).split("\n\n")))
    return "\n".join(lines) + "\n\n" + END + "\n"


def _description(cls: type) -> str:
    """The node's DESCRIPTION as written (without the 'openai missing' note the VLM node
    prepends when that package is absent, so the page does not depend on this Python)."""
    module = sys.modules.get(cls.__module__)
    base = getattr(module, "DESCRIPTION", None)
    if isinstance(base, str) and cls.DESCRIPTION.endswith(base):
        return base
    return cls.DESCRIPTION


def page_path(node_id: str) -> Path:
    return DOCS / f"{node_id}.md"


def updated_page(node_id: str, cls: type, current: str) -> str:
    """The page with its generated part rewritten; the hand-written top is kept."""
    if BEGIN in current:
        top = current[: current.index(BEGIN)]
    else:
        top = current.rstrip("\n") + "\n\n"
    return top + generated_part(cls)


def build(check: bool) -> int:
    classes, _ = _import_nodes()
    stale: list[str] = []
    for node_id, cls in classes.items():
        path = page_path(node_id)
        if not path.is_file():
            stale.append(
                f"{path.relative_to(ROOT)}: missing (write the artist's part, then run this)"
            )
            continue
        current = path.read_text(encoding="utf-8")
        wanted = updated_page(node_id, cls, current)
        if wanted != current:
            if check:
                stale.append(f"{path.relative_to(ROOT)}: stale (run scripts/build_node_help.py)")
            else:
                path.write_text(wanted, encoding="utf-8")
                print(f"wrote {path.relative_to(ROOT)}")
    for line in stale:
        print(line, file=sys.stderr)
    return 1 if stale else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale pages, write nothing")
    return build(parser.parse_args().check)


if __name__ == "__main__":
    raise SystemExit(main())
