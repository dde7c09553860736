"""The code base passes its linter (pyflakes, pycodestyle, bugbear and pyupgrade rules, as
configured in pyproject.toml): unused imports, undefined names and likely bugs fail CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "agent", "tui", "tests", "bench"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_test_module_has_a_name_of_its_own():
    """pytest imports test modules by basename (rootdir-relative, no packages): two files of one
    name in different folders stop the whole collection with "import file mismatch"."""
    names: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert not {name: paths for name, paths in names.items() if len(paths) > 1}
