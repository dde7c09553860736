"""The threat model in docs/security/README.md names, for each line, the tests that prove it:
each named file and test must exist, so a renamed or deleted test cannot leave a line unproved."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/security/README.md"


def threat_model_rows() -> list[str]:
    text = DOC.read_text()
    section = text.split("## Threat model: who can reach what", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Who ")]


def resolve(name: str) -> Path:
    """`tests/a/b.py` as given, or a bare `b.py` found once under tests/."""
    if "/" in name:
        return ROOT / name
    found = sorted((ROOT / "tests").rglob(name))
    assert len(found) == 1, f"{name}: {len(found)} files under tests/ have that name"
    return found[0]


def test_every_threat_model_line_names_tests_that_exist() -> None:
    rows = threat_model_rows()
    assert len(rows) >= 10
    for row in rows:
        proof = row.rstrip(" |").rsplit(" | ", 1)[1]
        current: Path | None = None
        named = 0
        for token in re.findall(r"`([^`]+)`", proof):
            file_part, _, test = token.partition("::")
            if file_part.endswith(".py"):
                current = resolve(file_part)
                assert current.is_file(), f"{token}: no such file"
                named += 1
            elif token.startswith("test_"):
                test = token
            if test:
                assert current is not None, f"{token} names no file first"
                assert re.search(rf"^(async )?def {re.escape(test)}\(", current.read_text(), re.M), f"{current.name} has no {test}"
                named += 1
        assert named, f"a threat model line names no test: {row[:80]}"
