"""`autogit-agent run` with `runner.runtime: kubernetes` as a real process against the real
cluster and the GitLab double: the daemon starts the watch-based inventory (ADR-016), serves it
in `status`, and a node's arrival wakes its loop as hotplug does on a host. GitLab is polled
once an hour here, so the only pass after the start's is one a wake-up asked for: a GPU job
waiting for hardware gets its runner only because the node's watch event woke the loop
(`cluster.node-changed` is in the event log). The runner is the stand-in manager image
(tests/k8s/images.py): what is proven is the planning and the pod's creation, not a job run."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from k8s.cluster import Cluster
from k8s.images import RUNNER_STAND_IN_IMAGE, runner_stand_in_archive
from k8s.nodes import nvidia_node

from autogit.agent.api.client import AgentClient
from autogit.agent.api.schema import JobStatus, StatusResponse
from autogit.agent.config import RunnerConfig
from autogit.agent.runtime import RunnerInstance
from autogit.agent.runtime.k8s_runtime import KubernetesRuntime
from autogit.gitlab_double import GitLabSimulator

LABEL = "autogit.test/agent-view"
AGENT = Path(sys.executable).parent / "autogit-agent"
T = TypeVar("T")


@pytest.fixture
def mark(k8s_cluster: Cluster) -> Iterator[str]:
    value = uuid.uuid4().hex[:8]
    yield value
    k8s_cluster.kubectl("delete", "nodes", "-l", f"{LABEL}={value}", "--wait=false", check=False)


async def _status(sock: Path) -> StatusResponse | None:
    try:
        async with AgentClient(sock) as client:
            return await client.status()
    except Exception:  # noqa: BLE001 - not listening yet
        return None


async def test_the_agent_process_serves_the_cluster_and_a_new_node_wakes_its_loop(
    k8s_cluster: Cluster, k8s_namespace: str, mark: str, tmp_path: Path
) -> None:
    k8s_cluster.import_image(runner_stand_in_archive())
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    hostname = f"av{mark}"
    runner = {"runtime": "kubernetes", "image": RUNNER_STAND_IN_IMAGE, "drain_timeout": 600, "force_timeout": 10,
              "kubernetes": {"namespace": k8s_namespace, "kubeconfig": str(k8s_cluster.kubeconfig), "service_account": "default",
                             "image_pull_policy": "Never", "node_selector": f"{LABEL}={mark}"}}  # fmt: skip
    config = {
        "hostname": hostname,
        "gitlab": {"url": sim.url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 3600, "max_retries": 0, "request_timeout": 3},
        "scaling": {"max_runners": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
        "fleet": {"enabled": False}, "runner": runner, "api": {"socket": str(tmp_path / "agent.sock")}, "gpu": {"vendors": []},
        "state_file": str(tmp_path / "state.json"),
    }  # fmt: skip
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(config))
    sock = tmp_path / "agent.sock"
    job = sim.add_job(project_id=1, tags=["gpu", "vram-ge-40g"], script=["true"])  # pending before the start's full poll
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "LD_PRELOAD"))} | {"AUTOGIT_GITLAB_TOKEN": sim.private_token}
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen([str(AGENT), "run", "--config", str(tmp_path / "agent.yaml")], env=env, stdout=log, stderr=subprocess.STDOUT)
    runtime = KubernetesRuntime(RunnerConfig.model_validate(runner), hostname)

    async def until(what: str, done: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await done()
            if found:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {what}: {(tmp_path / 'agent.log').read_text()[-3000:]}")
            await asyncio.sleep(0.2)

    async def planned() -> StatusResponse | None:
        st = await _status(sock)
        return st if st is not None and st.reconcile_count >= 1 and st.cluster is not None else None

    try:
        status = await until("the first pass", planned)
        assert status is not None and status.cluster is not None and status.cluster.known and status.cluster.nodes == [], status
        async with AgentClient(sock) as client:
            [view] = [v for v in (await client.jobs()).jobs if v.job.id == job.id]
        assert view.status is JobStatus.WAITING and view.wait is not None and "no node of the cluster" in view.wait.detail, view
        passes = status.reconcile_count

        name = f"av-{mark}-h100"
        node = nvidia_node(name, count=2)
        node["metadata"]["labels"][LABEL] = mark
        k8s_cluster.kubectl("create", "-f", "-", input=json.dumps(node))

        async def served() -> bool:
            async with AgentClient(sock) as client:
                return any(v.job.id == job.id and v.status is not JobStatus.WAITING for v in (await client.jobs()).jobs)

        # GitLab is polled once an hour: the only pass after the start's is the one the watch event asked for.
        await until("the job served after the node's arrival", served)
        status = await until("the status", planned)
        assert status is not None and status.cluster is not None
        assert status.reconcile_count > passes and [n.name for n in status.cluster.nodes] == [name]
        text = (tmp_path / "agent.log").read_text()
        assert f"cluster.node-changed node {name} added (amd64)" in text, text[-3000:]
        listed = await until("the GPU runner's manager pod", runtime.list)
        assert listed[0].tags == ["gpu", "vram-ge-40g"], listed
        # Its config holds the node's GPU as the device plugin's resource and the job's floor as node affinity.
        secret = k8s_cluster.kubectl_json("get", "secret", f"{listed[0].name}-config", "-n", k8s_namespace)
        section = tomllib.loads(base64.b64decode(secret["data"]["config.toml"]).decode())["runners"][0]["kubernetes"]
        assert json.loads(section["pod_spec"][0]["patch"])["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        [term] = section["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]["node_selector_terms"]
        assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39936"]} in term["match_expressions"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for r in await _safe(runtime):
            await runtime.remove(r.name)
        await runtime.close()
        await sim.stop()


async def _safe(runtime: KubernetesRuntime) -> list[RunnerInstance]:
    try:
        return await runtime.list()
    except Exception:  # noqa: BLE001 - the namespace's deletion takes the rest
        return []
