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
