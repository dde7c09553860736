"""`autogit-agent demo` from an installed copy of the package, run away from the source checkout:
the GitLab double and the gitlab-runner double's image recipe ship in the package
(autogit.gitlab_double), so the demo needs no checkout. With no image registry here it builds
the local gitlab-runner double, then runs its scripted jobs through real runner containers."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from ci_policy import require

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_runs_from_the_installed_package(tmp_path: Path) -> None:
    require(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no Docker engine")
    require(os.geteuid() == 0, "the demo builds the gitlab-runner double with debootstrap: root")
    env_dir = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    # The installed copy: built from the checkout like any install, into the new environment only.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(REPO)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    # Its dependencies come from the test environment's site-packages, read as a plain path: the
    # checkout's own editable install (a .pth hook there) is not processed from a path added so.
    # (Debian's dist-packages too: the test environment sees them, e.g. python3-yaml.)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n/usr/lib/python3/dist-packages\n")
    python = env_dir / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import autogit.gitlab_double as g, autogit.agent as a; print(g.__file__); print(a.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()  # fmt: skip
    assert all(path.startswith(str(site)) for path in where), where
    assert (site / "autogit/gitlab_double/runner_image/build.sh").exists()

    demo = subprocess.run([str(python), "-m", "autogit.agent.cli", "demo", "--jobs", "4"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-2000:] + demo.stdout[-2000:]
    assert "4 jobs succeeded" in demo.stdout and "nothing left behind" in demo.stdout
