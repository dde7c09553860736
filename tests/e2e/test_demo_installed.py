"""`autogit-agent demo` from the two binary packages of `make deb`, unpacked away from the
checkout (dpkg-deb -x: the bundled venv runs from wherever it lies):
- the product alone (autogit-agent) carries no GitLab double and no gitlab-runner double recipe
  (the double has no fixed admin token to carry: a fresh one each run, ADR-018), and
  `autogit-agent demo` says in one line what to install (exit 69);
- with autogit-agent-demo beside it, the demo runs: with no image registry here it builds the
  local gitlab-runner double, then runs its scripted jobs through real runner containers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from built_debs import built_debs
from ci_policy import require

pytestmark = [pytest.mark.docker, pytest.mark.slow]

VENV = Path("usr/lib/autogit-agent")


def unpack(root: Path, *debs: Path) -> Path:
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    # The venv's interpreter is a relative link to usr/bin/python3, as installed: give the
    # unpacked tree the system's.
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    if not (root / "usr/bin/python3").exists():
        (root / "usr/bin/python3").symlink_to("/usr/bin/python3")
    return root / VENV / "bin/python"


def demo(python: Path, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return subprocess.run([str(python), "-m", "autogit.agent.cli", "demo", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_the_product_package_alone_has_no_double_and_says_what_to_install(tmp_path: Path) -> None:
    product, _ = built_debs()
    python = unpack(tmp_path / "product", product)
    files = [p for p in (tmp_path / "product").rglob("*") if p.is_file() and not p.is_symlink()]
    assert not [p for p in files if "gitlab_double" in p.parts], "the product carries the GitLab double"
    assert not [p for p in files if p.name == "build.sh"], "the product carries the gitlab-runner double's recipe"
    out = demo(python, tmp_path)
    assert out.returncode == 69, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "apt install autogit-agent-demo" in out.stderr, out.stderr


def test_the_demo_runs_from_both_packages(tmp_path: Path) -> None:
    require(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no Docker engine")
    require(os.geteuid() == 0, "the demo builds the gitlab-runner double with debootstrap: root")
    product, demo_deb = built_debs()
    python = unpack(tmp_path / "both", product, demo_deb)
    where = subprocess.run([str(python), "-c", "import autogit.gitlab_double as g, autogit.agent as a; print(g.__file__); print(a.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.split()  # fmt: skip
    assert all(path.startswith(str(tmp_path / "both" / VENV)) for path in where), where
    out = demo(python, tmp_path, "--jobs", "4")
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    assert "4 jobs succeeded" in out.stdout and "nothing left behind" in out.stdout
