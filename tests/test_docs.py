"""The project's Markdown points to files that exist, so a moved section or file leaves no dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = sorted(
    path
    for path in ROOT.rglob("*.md")
    if not {".venv", "node_modules", ".devstack", ".pytest_cache"} & set(path.relative_to(ROOT).parts)
)
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(doc: Path) -> None:
    targets = [m["target"] for m in LINK.finditer(doc.read_text()) if not re.match(r"[a-z]+:", m["target"])]

    assert [t for t in targets if not (doc.parent / t).exists()] == []


def test_the_readme_links_the_manuals_and_design_notes() -> None:
    readme = (ROOT / "README.md").read_text()

    for target in (
        "devstack/README.md",
        "infra/README.md",
        "docs/batch-run.md",
        "docs/exactly-once.md",
        "docs/polling.md",
        "docs/batch-sets.md",
    ):
        assert f"]({target})" in readme, target


def test_the_readme_stays_a_users_readme_of_at_most_250_lines() -> None:
    # Manuals live beside what they describe (devstack/README.md, infra/README.md), design notes in docs/.
    lines = (ROOT / "README.md").read_text().splitlines()

    assert len(lines) <= 250
