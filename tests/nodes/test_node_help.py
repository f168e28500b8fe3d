"""Every node the pack registers has a help page where ComfyUI's node help panel looks
(``web/docs/<NodeId>.md``), written for artists, and carrying the node's own tooltips.

The frontend side (the panel really shows these pages) is tests/frontend/test_frontend_help.py.
"""

from __future__ import annotations

import re

import pytest
from comfyui_analogist import nodes
from support.node_help import artist_part, help_builder, plain_words

ARTIST_SECTIONS = ("## When the result is too weak or too strong", "## Common errors and fixes")


def _page(node_id: str) -> str:
    path = help_builder().page_path(node_id)
    assert path.is_file(), (
        f"{node_id} has no help page: write web/docs/{node_id}.md (the artist's part), then run "
        "scripts/build_node_help.py"
    )
    return path.read_text(encoding="utf-8")


def _output_names(cls: type) -> tuple[str, ...]:
    """The outputs' names as ComfyUI shows them: RETURN_NAMES, or the types when a node has none."""
    return tuple(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)


def _io_names(cls: type) -> set[str]:
    inputs = cls.INPUT_TYPES()
    names = {name for section in ("required", "optional") for name in inputs.get(section, {})}
    return names | set(_output_names(cls))


def test_every_registered_node_has_a_page_and_no_page_is_orphaned():
    assert not nodes.FAILED_FAMILIES, f"node families failed to load: {nodes.FAILED_FAMILIES}"
    registered = set(nodes.NODE_CLASS_MAPPINGS)
    assert registered, "the pack registered no nodes"
    pages = {p.stem for p in help_builder().DOCS.glob("*.md")}
    assert registered - pages == set(), f"nodes without a help page: {sorted(registered - pages)}"
    assert pages - registered == set(), f"pages for no node: {sorted(pages - registered)}"


@pytest.mark.parametrize("node_id", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_page_carries_every_tooltip_and_the_description(node_id):
    """The generated part is current: each input's and output's tooltip, word for word."""
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    page = _page(node_id)
    assert page == help_builder().updated_page(node_id, cls, page), (
        f"web/docs/{node_id}.md is stale: run scripts/build_node_help.py"
    )
    text = " ".join(page.split())
    inputs = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            tooltip = " ".join(spec[1]["tooltip"].split())
            assert f"**{name}**" in text and tooltip in text, f"{node_id}.{name}: no tooltip"
    for name, tip in zip(_output_names(cls), cls.OUTPUT_TOOLTIPS, strict=True):
        assert f"**{name}**" in text and " ".join(tip.split()) in text, f"{node_id} output {name}"
    first_sentence = help_builder()._description(cls).split(". ")[0]
    assert " ".join(first_sentence.split()) in text


@pytest.mark.parametrize("node_id", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_artist_part_is_written_and_names_real_inputs(node_id):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    top = artist_part(_page(node_id))
    title = top.splitlines()[0]
    display = nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert title in ("# " + display, "# " + display.split(" (")[0]), (
        f"title {title!r} does not match {display!r}"
    )
    for section in ARTIST_SECTIONS:
        assert section in top, f"{node_id}: the artist's part lacks {section!r}"
    assert len(plain_words(top).split()) >= 120, f"{node_id}: the artist's part is too short"
    # Every input or output the text names in bold exists (on this node, or the Analogist node
    # the sentence points to), so renaming an input cannot leave the page behind.
    known = set().union(*(_io_names(c) for c in nodes.NODE_CLASS_MAPPINGS.values()))
    named = set(re.findall(r"\*\*([a-z][a-z0-9_]*)\*\*", top))
    assert named, f"{node_id}: the artist's part names none of the node's inputs"
    assert named - known == set(), f"{node_id}: the page names inputs no node has: {named - known}"
    # Its own inputs or outputs, named in bold; an output without RETURN_NAMES is named by its
    # type (e.g. **SAMPLER**), which the lower-case pattern above does not see.
    own = {name for name in _io_names(cls) if f"**{name}**" in top}
    assert own, f"{node_id}: the page names none of its own inputs or outputs"
