"""mypy (configured in pyproject.toml, with pydantic's plugin) reports nothing in the packages
listed here. The folders are installed under other names (agent/ is autogit.agent, tui/ is
autogit.tui), so mypy reads them through a tree of links with the import names. Add a package
to CLEAN_PACKAGES or CLEAN_MODULES once it is clean; imported modules outside CLEAN are read for their types only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Packages (-p: every module in them) and single modules (-m) that are clean. Not yet listed:
# agent/config.py, configdocs.py, planner.py, reconciler.py, runtime/docker.py, gitlab_double/ and
# inventory/gpu/nvidia.py (errors left to fix), and tags.py and inventory/gpu/, clean today but
# being reworked.
CLEAN_PACKAGES = ("autogit.tui", "autogit.agent.api", "autogit.agent.gitlab")
CLEAN_MODULES = (
    "autogit.agent", "autogit.agent.cli", "autogit.agent.daemon", "autogit.agent.demo", "autogit.agent.events",
    "autogit.agent.fleet", "autogit.agent.metrics", "autogit.agent.model", "autogit.agent.render", "autogit.agent.scenario", "autogit.agent.state",
    "autogit.agent.systemd", "autogit.agent.inventory", "autogit.agent.inventory.cpu", "autogit.agent.inventory.host",
    "autogit.agent.inventory.hotplug",
)  # fmt: skip


def test_mypy_is_clean_on_the_typed_packages(tmp_path):
    (tmp_path / "src/autogit").mkdir(parents=True)
    (tmp_path / "src/autogit/agent").symlink_to(REPO / "agent")
    (tmp_path / "src/autogit/tui").symlink_to(REPO / "tui")
    (tmp_path / "src/autogit/gitlab_double").symlink_to(REPO / "gitlab_double")
    packages = [arg for name in CLEAN_PACKAGES for arg in ("-p", name)] + [arg for name in CLEAN_MODULES for arg in ("-m", name)]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
         "--explicit-package-bases", "--follow-imports=silent", "--no-error-summary", *packages],
        cwd=REPO, env={"MYPYPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
