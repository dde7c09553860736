"""`runner.runtime: kubernetes` on the real API server and kubelet (agent/runtime/k8s_runtime.py,
ADR-013): a runner's Secret and manager pod are created, listed Running and adopted by a fresh
runtime object (an agent restart), drained with SIGQUIT (abort: SIGTERM) through pods/exec and
removed without a trace; leftovers sweeps what runners not known left; the token is in the Secret
only, never in the pod spec; a ServiceAccount without the Role is refused with the verb named.

The manager pod's image is a stand-in (tests/k8s/images.py RUNNER_STAND_IN_IMAGE: busybox sh
that traps SIGQUIT and SIGTERM), not gitlab-runner: these tests prove the runtime's lifecycle,
not the Kubernetes executor's job pods (which ADR-013 lists as what remains)."""

from __future__ import annotations

import asyncio
import base64
import json
import tomllib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s.rbac import service_account_kubeconfig
from k8s.cluster import Cluster
from k8s.images import BUSYBOX_IMAGE, RUNNER_STAND_IN_IMAGE, runner_stand_in_archive
from pydantic import SecretStr

from autogit.agent.config import RunnerConfig
from autogit.agent.errors import InvalidConfiguration, PermissionRefused
from autogit.agent.model import RunnerKind
from autogit.agent.runtime import RunnerInstance, RunnerSpec, RunnerStatus
from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL, SHORT_TOKEN_LABEL, KubernetesRuntime, label_value
from autogit.agent.runtime.kubernetes import AGENT_RULES, OWNER_LABEL, RUNNER_LABEL, runner_secret
from autogit.agent.runtime.runner_config import short_tokens

TOKEN = "glrt-t1_SECRETTOKENabcdefghij"
AGENT = "agent-a"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def stand_in(k8s_cluster: Cluster) -> str:
    k8s_cluster.import_image(runner_stand_in_archive())
    return RUNNER_STAND_IN_IMAGE


def runtime_for(cluster: Cluster, namespace: str, image: str, kubeconfig: Path | None = None) -> KubernetesRuntime:
    config = RunnerConfig.model_validate({
        "runtime": "kubernetes", "image": image,
        "kubernetes": {"namespace": namespace, "kubeconfig": str(kubeconfig or cluster.kubeconfig), "service_account": "default",
                       "image_pull_policy": "Never"},
    })  # fmt: skip
    return KubernetesRuntime(config, AGENT)


def spec(name: str, token: str = TOKEN) -> RunnerSpec:
    return RunnerSpec(name=name, gitlab_id=42, token=SecretStr(token), url="https://gitlab.example.com", tags=["amd64", "linux"],
                      run_untagged=False, kind=RunnerKind.NATIVE, platform="linux/amd64", cpus=1, memory_mb=512)  # fmt: skip


async def until(what: str, check: Callable[[], Awaitable[Any]], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if found := await check():
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        await asyncio.sleep(0.5)


async def status_of(runtime: KubernetesRuntime, name: str) -> RunnerInstance | None:
    return next((r for r in await runtime.list() if r.name == name), None)


def owned_objects(cluster: Cluster, ns: str) -> str:
    return cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", f"{OWNER_LABEL}={AGENT}", "-o", "name").stdout.strip()


async def test_create_list_adopt_drain_remove(k8s_cluster: Cluster, k8s_namespace: str, stand_in: str) -> None:
    runtime = runtime_for(k8s_cluster, k8s_namespace, stand_in)
    try:
        created = await runtime.create(spec("r1"))
        assert (created.name, created.gitlab_id, created.status) == ("r1", 42, RunnerStatus.CREATING)
        running = await until("r1 running", lambda: _running(runtime, "r1"))
        assert running.started_at is not None and running.jobs == 0 and running.host == AGENT
        # a job pod labelled as its [runners.kubernetes] pod_labels say counts as its job (busy)
        k8s_cluster.kubectl(
            "create", "-n", k8s_namespace, "-f", "-", input=json.dumps(job_pod("job-of-r1", {JOB_OF_LABEL: "r1", OWNER_LABEL: AGENT}))
        )
        running = await until("r1 busy", lambda: _running(runtime, "r1"))
        assert running.jobs == 1

        # An agent restart: a fresh runtime adopts the pod from its labels and annotations alone.
        fresh = runtime_for(k8s_cluster, k8s_namespace, stand_in)
        try:
            adopted = await status_of(fresh, "r1")
            assert adopted is not None
            assert adopted.model_dump(exclude={"status_since"}) == running.model_dump(exclude={"status_since"})
            assert fresh.credentials("r1") == SecretStr(TOKEN)  # read back from the Secret
            await fresh.drain("r1")
        finally:
            await fresh.close()

        exited = await until("r1 exited after SIGQUIT", lambda: _exited(runtime, "r1"))
        assert exited.stop_requested_at is not None and exited.abort_requested_at is None
        # the stand-in exits 0 on SIGQUIT only (the kubelet marks the phase a moment after the container ends)
        assert await until("r1's phase", lambda: phase(k8s_cluster, k8s_namespace, "r1")) == "Succeeded"
        log = k8s_cluster.kubectl("logs", "-n", k8s_namespace, "r1", "-c", "runner").stdout
        assert "stand-in: config present" in log and "SIGQUIT: graceful stop" in log, log
        assert TOKEN not in log

        await runtime.remove("r1")
        assert owned_objects(k8s_cluster, k8s_namespace) == ""
        assert await runtime.list() == [] and runtime.credentials("r1") is None
        await runtime.remove("r1")  # gone: the goal is reached
        await runtime.drain("r1")
    finally:
        await runtime.close()


async def phase(cluster: Cluster, ns: str, name: str) -> str | None:
    """The pod's phase once it is terminal; None before."""
    value = cluster.kubectl_json("get", "pod", name, "-n", ns)["status"].get("phase")
    return value if value in ("Succeeded", "Failed") else None


async def _running(runtime: KubernetesRuntime, name: str) -> RunnerInstance | None:
    found = await status_of(runtime, name)
    return found if found and found.status is RunnerStatus.RUNNING else None


async def _exited(runtime: KubernetesRuntime, name: str) -> RunnerInstance | None:
    found = await status_of(runtime, name)
    return found if found and found.status is RunnerStatus.EXITED else None


async def test_abort_is_sigterm_and_kill_deletes_at_once(k8s_cluster: Cluster, k8s_namespace: str, stand_in: str) -> None:
    runtime = runtime_for(k8s_cluster, k8s_namespace, stand_in)
    try:
        await runtime.create(spec("r2"))
        await runtime.create(spec("r3", "glrt-t1_OTHERTOKEN0123456789"))
        await until("r2 running", lambda: _running(runtime, "r2"))
        await runtime.abort("r2")
        aborted = await until("r2 exited after SIGTERM", lambda: _exited(runtime, "r2"))
        assert aborted.abort_requested_at is not None
        assert await until("r2's phase", lambda: phase(k8s_cluster, k8s_namespace, "r2")) == "Failed"
        assert "SIGTERM: forceful stop" in k8s_cluster.kubectl("logs", "-n", k8s_namespace, "r2", "-c", "runner").stdout

        await runtime.kill("r3")
        await until("r3 deleted", lambda: _absent(runtime, "r3"), timeout=30)
        for name in ("r2", "r3"):
            await runtime.remove(name)
        assert owned_objects(k8s_cluster, k8s_namespace) == ""
    finally:
        await runtime.close()


async def _absent(runtime: KubernetesRuntime, name: str) -> bool:
    return await status_of(runtime, name) is None


async def test_the_token_is_in_the_secret_never_in_the_pod(k8s_cluster: Cluster, k8s_namespace: str, stand_in: str) -> None:
    runtime = runtime_for(k8s_cluster, k8s_namespace, stand_in)
    try:
        await runtime.create(spec("r4").model_copy(update={"ca_pem": CA_PEM}))
        pod = k8s_cluster.kubectl_json("get", "pod", "r4", "-n", k8s_namespace)
        assert TOKEN not in json.dumps(pod)
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
            assert "env" not in container and "envFrom" not in container, container
        secret = k8s_cluster.kubectl_json("get", "secret", "r4-config", "-n", k8s_namespace)
        config = tomllib.loads(base64.b64decode(secret["data"]["config.toml"]).decode())
        runner = config["runners"][0]
        assert runner["token"] == TOKEN and runner["executor"] == "kubernetes" and "docker" not in runner
        section = runner["kubernetes"]
        assert section["namespace"] == k8s_namespace and section["node_selector"] == {"kubernetes.io/arch": "amd64"}
        assert section["pod_labels"] == {JOB_OF_LABEL: "r4", OWNER_LABEL: AGENT}
        # GitLab's private CA travels in the Secret and lands beside config.toml, where tls-ca-file points
        assert runner["tls-ca-file"] == "/etc/gitlab-runner/ca.crt"
        await until("r4 running", lambda: _running(runtime, "r4"))
        copied = k8s_cluster.kubectl("exec", "-n", k8s_namespace, "r4", "-c", "runner", "--", "cat", "/etc/gitlab-runner/ca.crt").stdout
        assert copied == CA_PEM
        await runtime.remove("r4")
        assert owned_objects(k8s_cluster, k8s_namespace) == ""
    finally:
        await runtime.close()


def job_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    container = {"name": "build", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "3600"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 30}}  # fmt: skip


async def test_leftovers_removes_an_orphaned_secret_and_job_pods(k8s_cluster: Cluster, k8s_namespace: str, stand_in: str) -> None:
    ns = k8s_namespace
    orphan_token = "glrt-t1_ORPHANTOKEN0123456789"
    orphan = runner_secret("gone1", ns, f'[[runners]]\nname = "gone1"\ntoken = "{orphan_token}"\n', owner=AGENT)
    kept = runner_secret("known1", ns, f'[[runners]]\nname = "known1"\ntoken = "{TOKEN}"\n', owner=AGENT)
    other_agent = runner_secret("theirs1", ns, '[[runners]]\ntoken = "glrt-x"\n', owner="agent-b")
    # job pods as gitlab-runner labels them (its short token; the v18.2 form) and as the agent asks (pod_labels)
    by_token = job_pod("runner-job-1", {SHORT_TOKEN_LABEL: label_value(short_tokens(orphan_token)[-1])})
    by_name = job_pod("runner-job-2", {JOB_OF_LABEL: "gone2", OWNER_LABEL: AGENT})
    known_job = job_pod("runner-job-3", {JOB_OF_LABEL: "known1", OWNER_LABEL: AGENT})
    k8s_cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                        "items": [orphan, kept, other_agent, by_token, by_name, known_job]}))  # fmt: skip
    runtime = runtime_for(k8s_cluster, ns, stand_in)
    try:
        removed = await runtime.leftovers({"known1"})
        assert sorted(removed) == ["gone1-config", "runner-job-1", "runner-job-2"]
        left = set(k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-o", "name").stdout.split())
        assert {"pod/runner-job-1", "pod/runner-job-2", "secret/gone1-config"}.isdisjoint(left)
        assert {"pod/runner-job-3", "secret/known1-config", "secret/theirs1-config"} <= left
        assert await runtime.leftovers({"known1"}) == []
        await runtime.remove("known1")
        assert "pod/runner-job-3" not in k8s_cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout
    finally:
        await runtime.close()


async def test_a_service_account_without_the_role_is_refused_naming_the_verb(
    k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    token = k8s_cluster.kubectl("create", "token", "nobody", "-n", ns, "--duration", "10m").stdout.strip()
    admin = yaml.safe_load(k8s_cluster.kubeconfig.read_text())
    admin["users"] = [{"name": "nobody", "user": {"token": token}}]
    for context in admin["contexts"]:
        context["context"]["user"] = "nobody"
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(admin))
    runtime = runtime_for(k8s_cluster, ns, RUNNER_STAND_IN_IMAGE, kubeconfig)
    try:
        with pytest.raises(PermissionRefused) as refused:
            await runtime.list()
        assert refused.value.missing == "list pods" and "list pods" in str(refused.value)
        assert token not in str(refused.value)
        with pytest.raises(PermissionRefused) as refused:
            await runtime.create(spec("r5"))
        assert refused.value.missing == "create secrets"
    finally:
        await runtime.close()
    assert k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", RUNNER_LABEL, "-o", "name").stdout.strip() == ""


async def test_a_refused_pod_leaves_no_secret_and_a_pending_one_drains_quietly(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    invalid = runtime_for(k8s_cluster, ns, "autogit.local/stand-in:1 ")  # the API server refuses whitespace around an image
    try:
        with pytest.raises(InvalidConfiguration) as refused:
            await invalid.create(spec("r6"))
        assert refused.value.field == "runner.image" and TOKEN not in str(refused.value)
        assert owned_objects(k8s_cluster, ns) == ""  # the Secret written first is gone again
    finally:
        await invalid.close()
    # an image that is not there (pull policy Never): the pod stays Pending, its runner never starts
    absent = runtime_for(k8s_cluster, ns, "autogit.local/absent:1")
    try:
        await absent.create(spec("r7"))
        await until("r7 waiting for its image", lambda: _waiting(k8s_cluster, ns, "r7"))
        await absent.drain("r7")  # nothing to signal: recorded only
        pending = await status_of(absent, "r7")
        assert pending is not None and pending.status is RunnerStatus.CREATING and pending.stop_requested_at is not None
        await absent.remove("r7")
        assert owned_objects(k8s_cluster, ns) == ""
    finally:
        await absent.close()


async def _waiting(cluster: Cluster, ns: str, name: str) -> bool:
    statuses = cluster.kubectl_json("get", "pod", name, "-n", ns)["status"].get("initContainerStatuses") or []
    return any((s.get("state") or {}).get("waiting", {}).get("reason") == "ErrImageNeverPull" for s in statuses)


async def test_the_declared_rules_carry_a_runner_from_create_to_remove(k8s_cluster: Cluster, k8s_namespace: str, stand_in: str,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    """AGENT_RULES, exactly what the chart grants in the runners' namespace, are enough for every
    call of the runtime, the stops through pods/exec included: a websocket exec is a GET upgrade,
    checked as `get` and (Kubernetes >= 1.35) `create`; with `create` alone every drain was refused."""
    ns = k8s_namespace
    with service_account_kubeconfig(k8s_cluster, ns, tmp_path, AGENT_RULES) as kubeconfig:
        runtime = runtime_for(k8s_cluster, ns, stand_in, kubeconfig)
        try:
            for name in ("r1", "r2"):
                await runtime.create(spec(name))
                await until(f"{name} running", partial(_running, runtime, name))
            await runtime.drain("r1")
            await runtime.abort("r2")
            for name in ("r1", "r2"):
                await until(f"{name} exited", partial(_exited, runtime, name))
            assert await runtime.leftovers({"r1", "r2"}) == []
            for name in ("r1", "r2"):
                await runtime.remove(name)
            assert owned_objects(k8s_cluster, ns) == ""
        finally:
            await runtime.close()
