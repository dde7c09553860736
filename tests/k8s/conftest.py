"""Fixtures for the tests that need a real Kubernetes (tests/k8s/cluster.py).

`k8s_cluster` (session): with AUTOGIT_K8S_DIR set, the cluster scripts/k8s-up started there
(left running); otherwise a fresh one in a temporary folder, torn down at the end of the session
with every host change undone (the teardown's problems fail the session). Under CI=true a
missing prerequisite fails the test (tests/ci_policy.py); elsewhere it skips, and binaries not
built yet skip too (scripts/k8s-build takes ~20 minutes; scripts/dev-setup runs it).

`k8s_namespace`: a fresh namespace per test, deleted (with its pods and Secrets) afterwards and
waited for; `fake_nodes`: creates kwok nodes and deletes them afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ci_policy import IN_CI, require
from k8s.cluster import REPO, Cluster, build_binaries, down, up
from k8s.images import agent_test_archive, busybox_archive, runner_double_archive

LOCK = Path("/run/lock/autogit-k8s.lock")


def _prerequisites() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster needs root"
    for tool in ("containerd", "ctr", "runc", "openssl", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/dev-setup installs it)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "containernetworking-plugins is not installed (scripts/dev-setup installs it)"
    return None


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    missing = _prerequisites()
    require(missing is None, str(missing))
    if existing := os.environ.get("AUTOGIT_K8S_DIR"):
        yield Cluster(Path(existing))
        return
    cached = subprocess.run([str(REPO / "scripts/k8s-build"), "--dir"], capture_output=True, text=True, check=True).stdout.strip()
    if not IN_CI and not (Path(cached) / "key").exists():
        pytest.skip("the test Kubernetes is not built yet: run scripts/k8s-build (~20 min)")
    binaries = build_binaries()
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one kubelet per machine: wait for another session's
        folder = Path(tempfile.mkdtemp(prefix="autogit-k8s-", dir="/tmp"))
        try:
            cluster = up(folder, binaries)
        except BaseException:
            if folder.exists() and not any(folder.iterdir()):  # refused before anything started
                folder.rmdir()
            raise
        try:
            yield cluster
        finally:
            problems = down(folder)
        assert not problems, f"the test cluster's teardown left: {problems}"


@pytest.fixture
def k8s_namespace(k8s_cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    k8s_cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while k8s_cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"namespace {name}: no default ServiceAccount after 30 s"
        time.sleep(0.2)
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", timeout=150)
    leftover = k8s_cluster.kubectl("get", "pods,secrets", "-n", name, "-o", "name", check=False).stdout.strip()
    assert not leftover, f"namespace {name} left {leftover}"


@pytest.fixture
def fake_nodes(k8s_cluster: Cluster) -> Iterator[Callable[..., list[str]]]:
    created: list[str] = []

    def create(*nodes: dict[str, Any]) -> list[str]:
        names = [n["metadata"]["name"] for n in nodes]
        created.extend(names)
        k8s_cluster.kubectl("create", "-f", "-", input=_as_list(nodes), timeout=300)
        return names

    yield create
    for start in range(0, len(created), 200):
        k8s_cluster.kubectl("delete", "node", "--wait=false", *created[start:start + 200], check=False, timeout=300)


def _as_list(items: tuple[dict[str, Any], ...]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """helm from scripts/k8s-build's cache (or $AUTOGIT_HELM): the chart tests need no cluster."""
    if override := os.environ.get("AUTOGIT_HELM"):
        return Path(override)
    cached = Path(subprocess.run([str(REPO / "scripts/k8s-build"), "--dir"], capture_output=True, text=True, check=True).stdout.strip())
    if not (cached / "bin/helm").exists() and IN_CI:
        cached = build_binaries()
    require((cached / "bin/helm").exists(), "helm is not built yet: run scripts/k8s-build")
    return cached / "bin/helm"


@pytest.fixture(scope="session")
def agent_image_archive() -> Path:
    """scripts/k8s-agent-image's archive of this checkout (amd64 and arm64)."""
    out = subprocess.run([str(REPO / "scripts/k8s-agent-image")], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def agent_image(k8s_cluster: Cluster, agent_image_archive: Path) -> str:
    """The agent image in the cluster's containerd, named by its content (tests/k8s/images.py
    agent_test_archive): other checkouts' tests on the shared cluster import their own."""
    name, archive = agent_test_archive(agent_image_archive)
    k8s_cluster.import_image(archive, all_platforms=True)
    return name


@pytest.fixture(scope="session")
def runner_double_image(k8s_cluster: Cluster, agent_image_archive: Path) -> str:
    """The gitlab-runner double as a manager pod's image (tests/k8s/images.py), and busybox for job pods."""
    name, archive = runner_double_archive(agent_image_archive)
    k8s_cluster.import_image(archive, all_platforms=True)
    k8s_cluster.import_image(busybox_archive())
    return name
