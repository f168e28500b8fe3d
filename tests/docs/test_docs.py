"""The README and the manual in docs/: links resolve, facts the README states match the tree.

No ComfyUI needed: these read files only.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(h) for h in re.findall(r"(?m)^#+ (.+)$", page.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_readme_is_short_and_lists_every_shipped_workflow():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 13_000, "the README is meant to stay about 10-12 KB"
    for workflow in sorted((ROOT / "workflows").glob("*.json")):
        assert f"`{workflow.name}`" in readme, f"{workflow.name} is missing from the workflow table"
    assert "](workflows/analogist.jpg)" in readme


def test_readme_scripts_are_the_ones_in_the_tree():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for script in re.findall(r"bash (scripts/\w+\.sh)", readme):
        assert (ROOT / script).is_file(), script
    # scripts/run.sh starts the UI; scripts/test.sh runs pytest on both hosts
    assert "main.py" in (ROOT / "scripts/run.sh").read_text()
    assert "pytest" in (ROOT / "scripts/test.sh").read_text()


def test_no_citation_of_a_design_file_outside_the_repo():
    """Code, tests and docs cite docs/design.md by a section that exists there."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    sections = set(re.findall(r"(?m)^## (.+)$", (ROOT / "docs/design.md").read_text()))
    problems = []
    for name in tracked:
        if name == "tests/docs/test_docs.py":  # this file names the pattern it looks for
            continue
        text = (ROOT / name).read_text(encoding="utf-8")
        if re.search(r"(?<![/\w])DESIGN\.md", text):
            problems.append(f"{name}: cites DESIGN.md (use docs/design.md)")
        for cited in re.findall(r'docs/design\.md,?\s+\(?"([^"]+)"', " ".join(text.split())):
            if cited not in sections:
                problems.append(f"{name}: docs/design.md has no section {cited!r}")
    assert not problems, "\n".join(problems)
