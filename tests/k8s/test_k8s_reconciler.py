"""The reconciler drives `runner.runtime: kubernetes` (built by the runtime registry from the
config, as the daemon builds it) against the GitLab double and the real cluster: a pending job
gets a registration and a manager pod carrying it; once the job is gone the idle runner is
drained (SIGQUIT), seen exited, removed and unregistered, and nothing is left in the namespace or
in GitLab. The manager image is the stand-in (tests/k8s/images.py): it takes no job, which is
why the job is cancelled rather than run (the gitlab-runner double's Kubernetes executor is what
remains, ADR-013)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from k8s.cluster import Cluster
from k8s.images import RUNNER_STAND_IN_IMAGE, runner_stand_in_archive
from pydantic import SecretStr

from autogit.agent.config import AgentConfig
from autogit.agent.errors import AdapterError
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.inventory.cpu import observe_cpu
from autogit.agent.model import Host
from autogit.agent.reconciler import Reconciler
from autogit.agent.runtime import RunnerInstance, RunnerStatus, build_runtime
from autogit.agent.runtime.k8s_runtime import KubernetesRuntime
from autogit.agent.runtime.kubernetes import OWNER_LABEL
from autogit.agent.state import AgentState
from autogit.gitlab_double.gitlab_sim import GitLabSimulator


async def test_a_pending_job_gets_a_runner_pod_which_is_drained_and_removed_when_idle(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    k8s_cluster.import_image(runner_stand_in_archive())
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    hostname = f"t{uuid.uuid4().hex[:8]}"
    runtime, state, reconciler = agent_on(k8s_cluster, sim, sim.url, hostname, {"image": RUNNER_STAND_IN_IMAGE},
                                          {"namespace": k8s_namespace, "service_account": "default"})  # fmt: skip

    async def until(what: str, done: Callable[[list[RunnerInstance]], bool], timeout: float = 120) -> list[RunnerInstance]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await reconciler.reconcile_once(full_poll=True)
            listed = await runtime.list()
            if done(listed):
                return listed
            assert asyncio.get_running_loop().time() < deadline, f"waited {timeout:.0f} s for {what}: {listed}"
            await asyncio.sleep(0.5)

    try:
        job = sim.add_job(project_id=1, tags=[], script=["true"])
        listed = await until("a running runner pod", lambda rs: any(r.status is RunnerStatus.RUNNING for r in rs))
        runner = next(r for r in listed if r.status is RunnerStatus.RUNNING)
        assert [r.id for r in sim.runners] == [runner.gitlab_id]  # the pod carries its registration
        assert runtime.credentials(runner.name) is not None

        sim.cancel_job(job.id)
        await until("the idle runner removed", lambda rs: rs == [] and not sim.runners)
        # the graceful stop, and only it: the stand-in exits on SIGQUIT, the pass after sees it exited and removes it
        kinds = [e.type for e in state.bus.history() if e.data.get("runner") == runner.name]
        assert {"runner.stopping", "runner.draining"} & set(kinds) and "runner.removed" in kinds, kinds
        assert not {"runner.aborting", "runner.killed", "runner.action-failed"} & set(kinds), kinds
        left = k8s_cluster.kubectl("get", "pods,secrets", "-n", k8s_namespace, "-l", f"{OWNER_LABEL}={hostname}", "-o", "name")
        assert left.stdout.strip() == ""
    finally:
        await remove_all(runtime)
        await sim.stop()


def agent_on(cluster: Cluster, sim: GitLabSimulator, gitlab_url: str, hostname: str, runner: dict[str, Any],
             kubernetes: dict[str, Any]) -> tuple[KubernetesRuntime, AgentState, Reconciler]:  # fmt: skip
    """The agent's runtime and reconciler as the daemon builds them, on the test cluster through its
    kubeconfig, with short timeouts; `runner` and `kubernetes` add to its runner settings."""
    config = AgentConfig.model_validate({
        "hostname": hostname,
        "gitlab": {"url": gitlab_url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 0.5, "request_timeout": 3, "max_retries": 0},
        "scaling": {"max_runners": 2, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
        "fleet": {"enabled": False},
        "runner": {"runtime": "kubernetes", "drain_timeout": 600, "force_timeout": 10,
                   "kubernetes": {"kubeconfig": str(cluster.kubeconfig), "image_pull_policy": "Never"} | kubernetes} | runner,
    })  # fmt: skip
    cpu = observe_cpu()
    host = Host(hostname=hostname, arch=cpu.arch, emulated=cpu.emulated, cpus=cpu.cpus, memory_mb=cpu.memory_mb)
    runtime = build_runtime(config, hostname, host)
    assert isinstance(runtime, KubernetesRuntime)
    state = AgentState()
    return runtime, state, Reconciler(config, state, runtime, GitLabAdapter(config.gitlab, SecretStr(sim.private_token)), lambda: host)


async def remove_all(runtime: KubernetesRuntime) -> None:
    """Remove what is left after a failure and close the runtime (the namespace's deletion takes the rest)."""
    try:
        left = await runtime.list()
    except AdapterError:
        left = []
    for r in left:
        await runtime.remove(r.name)
    await runtime.close()
