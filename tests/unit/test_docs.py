"""The docs stay true in the ways a machine can check: every relative link resolves, and every
document under docs/ is reachable from docs/INDEX.md."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)")


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(path.read_text()) if not t.startswith(("http:", "https:", "mailto:", "file:"))]


def test_every_relative_link_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = [(str(p.relative_to(REPO)), t) for p in pages for t in _links(p) if not (p.parent / t).exists()]
    assert broken == []


def test_every_doc_is_reachable_from_the_index():
    seen: set[Path] = set()
    todo = [REPO / "docs/INDEX.md"]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.exists():
            continue
        seen.add(page)
        todo.extend((page.parent / t).resolve() for t in _links(page))
    orphans = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md") if p.resolve() not in seen)
    assert orphans == []
