"""mypy (configured in pyproject.toml, with pydantic's plugin) reports nothing in the packages
listed here. The folders are installed under other names (agent/ is autogit.agent, tui/ is
autogit.tui), so mypy reads them through a tree of links with the import names. Add a package
to CLEAN_PACKAGES once it is clean; imported modules outside it are read for their types only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Every package is checked: the agent, the console and the doubles shipped with them.
CLEAN_PACKAGES = ("autogit.tui", "autogit.agent", "autogit.gitlab_double")


def test_mypy_is_clean_on_the_typed_packages(tmp_path):
    (tmp_path / "src/autogit").mkdir(parents=True)
    (tmp_path / "src/autogit/agent").symlink_to(REPO / "agent")
    (tmp_path / "src/autogit/tui").symlink_to(REPO / "tui")
    (tmp_path / "src/autogit/gitlab_double").symlink_to(REPO / "gitlab_double")
    packages = [arg for name in CLEAN_PACKAGES for arg in ("-p", name)]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
         "--explicit-package-bases", "--follow-imports=silent", "--no-error-summary", *packages],
        cwd=REPO, env={"MYPYPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
