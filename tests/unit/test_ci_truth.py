"""One CI truth: CI=true (what .ci/run exports) and nothing else, read in one place,
tests/ci_policy.py. A second reader could disagree with it (CI=1 was once "CI" in one file and
"not CI" in another), so a test that must never skip in CI could skip there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_READS_CI = re.compile(r"""environ(?:\.get)?\s*[\[(]\s*["']CI["']|getenv\(\s*["']CI["']""")


def test_only_ci_policy_reads_the_ci_variable():
    readers = sorted(
        str(path.relative_to(REPO))
        for folder in ("agent", "tui", "tests", "bench", "scripts")
        for path in (REPO / folder).rglob("*.py")
        if _READS_CI.search(path.read_text(errors="replace"))
    )
    assert readers == ["tests/ci_policy.py"]
    assert "export CI=true" in (REPO / ".ci/run").read_text()


def test_ci_means_exactly_true():
    def in_ci(value: str) -> bool:
        code = "import ci_policy; print(ci_policy.IN_CI)"
        env = {"CI": value, "PYTHONPATH": str(REPO / "tests")}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "True"

    assert in_ci("true")
    assert not any(in_ci(v) for v in ("1", "yes", "TRUE", "True", ""))
