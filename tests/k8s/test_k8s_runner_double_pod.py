"""`runner.runtime: kubernetes` end to end below the chart: the reconciler (as the daemon builds it)
against the GitLab double on the host, with the gitlab-runner double as the manager pod's image
(tests/k8s/images.py runner_double_archive). A pending job gets a registration and a manager
pod; the double in it takes the job with the runners' ServiceAccount (in-cluster config, the
Role of agent/runtime/kubernetes.py RUNNER_RULES) and runs it as a job pod on the real kubelet;
GitLab sees success; the idle runner is drained, removed and unregistered; nothing is left."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

from k8s.cluster import Cluster
from k8s.images import BUSYBOX_IMAGE
from k8s.test_k8s_reconciler import agent_on, remove_all

from autogit.agent.runtime import RunnerInstance
from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL
from autogit.agent.runtime.kubernetes import OWNER_LABEL, RUNNER_RULES
from autogit.gitlab_double.gitlab_sim import GitLabSimulator

RUNNER_SA = "autogit-runner"


def runner_rbac(namespace: str) -> list[dict[str, Any]]:
    """The runners' ServiceAccount as the chart makes it (no token mounted by default) and the Role
    of RUNNER_RULES bound to it."""
    meta = {"name": RUNNER_SA, "namespace": namespace}
    rules = [{"apiGroups": [r.api_group], "resources": list(r.resources), "verbs": list(r.verbs)} for r in RUNNER_RULES]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": RUNNER_SA},
         "subjects": [{"kind": "ServiceAccount", "name": RUNNER_SA, "namespace": namespace}]},
    ]  # fmt: skip


async def test_a_pending_job_runs_as_a_job_pod_of_the_doubles_manager_pod_then_all_scales_to_zero(
    k8s_cluster: Cluster, k8s_namespace: str, runner_double_image: str
) -> None:
    ns = k8s_namespace
    k8s_cluster.apply(*runner_rbac(ns))
    sim = GitLabSimulator(host="0.0.0.0")
    await sim.start()
    gitlab_url = f"http://10.244.0.1:{sim.port}"  # the host, from a pod, through the CNI bridge
    hostname = f"t{uuid.uuid4().hex[:8]}"
    runtime, state, reconciler = agent_on(
        k8s_cluster, sim, gitlab_url, hostname,
        {"image": runner_double_image, "job_image": BUSYBOX_IMAGE, "helper_image": BUSYBOX_IMAGE, "pull_policy": "never", "check_interval": 1},
        {"namespace": ns, "service_account": RUNNER_SA},
    )  # fmt: skip
    job_pods: dict[str, dict[str, Any]] = {}

    async def until(what: str, done: Callable[[list[RunnerInstance]], bool], timeout: float = 180) -> list[RunnerInstance]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await reconciler.reconcile_once(full_poll=True)
            listed = await runtime.list()
            for pod in k8s_cluster.kubectl_json("get", "pods", "-n", ns, "-l", JOB_OF_LABEL)["items"]:
                job_pods[pod["metadata"]["name"]] = pod
            if done(listed):
                return listed
            if asyncio.get_running_loop().time() > deadline:
                logs = k8s_cluster.kubectl("logs", "-n", ns, "-l", f"{OWNER_LABEL}={hostname}", "--tail=30", check=False).stdout
                pods = k8s_cluster.kubectl("get", "pods", "-n", ns, "-o", "jsonpath={.items[*].status}", check=False).stdout
                raise AssertionError(f"waited {timeout:.0f} s for {what}: {listed}\n{logs}\n{pods[-3000:]}")
            await asyncio.sleep(0.5)

    try:
        job = sim.add_job(project_id=1, tags=[], script=["echo job pod $(hostname) on $(uname -m)"])
        await until("the job done", lambda rs: sim.job(job.id).status in ("success", "failed"))
        finished = sim.job(job.id)
        trace = bytes(finished.trace).decode()
        assert finished.status == "success", trace
        assert "job pod runner-" in trace and "Preparing the \"kubernetes\" executor" in trace
        # the job pod: on the real kubelet, under the runners' ServiceAccount, which mounts it no token
        assert job_pods and all(p["spec"].get("nodeName") == "localhost" for p in job_pods.values())
        assert all(p["spec"]["serviceAccountName"] == RUNNER_SA and "automountServiceAccountToken" not in p["spec"] for p in job_pods.values())

        await until("the idle runner removed", lambda rs: rs == [] and not sim.runners)
        kinds = [e.type for e in state.bus.history() if e.data.get("runner")]
        assert "runner.removed" in kinds and not {"runner.killed", "runner.action-failed"} & set(kinds), kinds
        left = k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", f"{OWNER_LABEL}={hostname}", "-o", "name").stdout.strip()
        jobs_left = k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", JOB_OF_LABEL, "-o", "name").stdout.strip()
        assert left == "" and jobs_left == ""
        assert json.dumps(list(job_pods.values())).count(sim.private_token) == 0
    finally:
        await remove_all(runtime)
        await sim.stop()
