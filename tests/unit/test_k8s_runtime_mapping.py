"""The Kubernetes runtime's pure parts (agent/runtime/k8s_runtime.py, k8s_errors.py): every
kubernetes_asyncio/aiohttp failure as agent.errors (403 names the verb and resource, 404, 409,
transport → Transient, a secret never in the line), a manager pod's phase and container state as
RunnerStatus (unknown is never exited), its config.toml with the Kubernetes executor; and an API
server that cannot be reached makes list() raise Transient (never an empty list)."""

from __future__ import annotations

import json
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tomli_w
import yaml
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from yarl import URL

from autogit.agent.config import AgentConfig, RunnerConfig
from autogit.agent.daemon import config_changes
from autogit.agent.errors import AdapterError, Conflict, InvalidConfiguration, NotFound, PermissionRefused, Transient
from autogit.agent.model import Gpu, GpuVendor, Host, RunnerKind
from autogit.agent.runtime import RunnerRuntime, RunnerSpec, RunnerStatus, build_runtime, runtime_names
from autogit.agent.runtime.k8s_errors import translate
from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL, KubernetesRuntime, ManagedPod, label_value, pod_status

TOKEN = "glrt-t1_SECRET0123456789abc"


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": status}).encode()
    return exc


def test_a_refusal_names_the_verb_and_the_resource() -> None:
    error = translate(api_error(403, 'pods is forbidden: User "system:serviceaccount:ci:x" cannot list resource "pods"\nmore'),
                      "listing pods", verb="list", resource="pods")  # fmt: skip
    assert isinstance(error, PermissionRefused) and not error.retryable
    assert error.missing == "list pods"
    assert str(error).startswith("listing pods: the API server refused `list pods` (403: pods is forbidden")
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, NotFound), (409, Conflict), (500, Transient), (503, Transient), (429, Transient), (401, PermissionRefused)],
)
def test_api_statuses_map_onto_the_error_tree(status: int, kind: type[AdapterError]) -> None:
    error = translate(api_error(status, "the message"), "deleting pod r1", verb="delete", resource="pods")
    assert type(error) is kind and "deleting pod r1" in str(error) and "the message" in str(error)


def test_an_invalid_object_points_at_the_config_key_when_one_is_named() -> None:
    exc = api_error(422, 'Pod "r1" is invalid: spec.containers[0].image: Required value')
    error = translate(exc, "creating runner pod r1", verb="create", resource="pods", config_field="runner.image")
    assert isinstance(error, InvalidConfiguration) and error.field == "runner.image"
    plain = translate(exc, "creating runner pod r1", verb="create", resource="pods")
    assert type(plain) is AdapterError and "422" in str(plain)


@pytest.mark.parametrize(
    "exc", [aiohttp.ClientConnectionError("refused"), TimeoutError(), ConnectionRefusedError(111, "Connection refused")]
)
def test_transport_failures_are_transient(exc: BaseException) -> None:
    error = translate(exc, "listing pods", verb="list", resource="pods")
    assert isinstance(error, Transient) and error.retryable and str(error).startswith("listing pods: API server unreachable")


def test_a_body_that_is_not_a_status_falls_back_to_the_reason() -> None:
    exc = ApiException(status=502, reason="Bad Gateway")
    exc.body = b"<html>proxy error</html>"
    assert str(translate(exc, "listing pods", verb="list", resource="pods")) == "listing pods: API server: Bad Gateway"


def pod(phase: str | None, runner: dict[str, Any] | None = None, deleting: bool = False) -> ManagedPod:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if runner is not None:
        status["containerStatuses"] = [{"name": "runner", "state": runner, "ready": True}]
    meta: dict[str, Any] = {"name": "r1", "creationTimestamp": "2026-12-06T10:00:00+00:00", "uid": "x"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T10:05:00+00:00"
    return ManagedPod.model_validate({"metadata": meta, "status": status, "spec": {"containers": []}})


RUNNING = {"running": {"startedAt": "2026-12-06T10:00:05+00:00"}}
ENDED = {"terminated": {"startedAt": "2026-12-06T10:00:05+00:00", "finishedAt": "2026-12-06T10:03:00+00:00", "exitCode": 0}}
WAITING = {"waiting": {"reason": "PodInitializing"}}


@pytest.mark.parametrize(
    ("phase", "runner", "deleting", "expected"),
    [
        ("Pending", None, False, RunnerStatus.CREATING),
        ("Pending", WAITING, False, RunnerStatus.CREATING),
        ("Running", RUNNING, False, RunnerStatus.RUNNING),
        ("Running", WAITING, False, RunnerStatus.CREATING),
        ("Running", ENDED, False, RunnerStatus.EXITED),  # the runner ended, the pod not yet marked
        ("Succeeded", ENDED, False, RunnerStatus.EXITED),
        ("Failed", ENDED, False, RunnerStatus.EXITED),
        ("Running", RUNNING, True, RunnerStatus.GONE),
        ("Unknown", RUNNING, False, RunnerStatus.UNKNOWN),  # its node is unreachable: never read as exited
        (None, None, False, RunnerStatus.UNKNOWN),
        ("SomethingNew", None, False, RunnerStatus.UNKNOWN),
    ],
)
def test_pod_phase_and_container_state_as_runner_status(phase: str | None, runner: dict[str, Any] | None, deleting: bool,
                                                        expected: RunnerStatus) -> None:  # fmt: skip
    assert pod_status(pod(phase, runner, deleting))[0] is expected


def test_since_and_started_come_from_the_runner_container() -> None:
    status, since, started = pod_status(pod("Running", RUNNING))
    assert since == started and started is not None and started.minute == 0 and started.second == 5
    status, since, started = pod_status(pod("Succeeded", ENDED))
    assert since is not None and since.minute == 3 and started is not None and started.second == 5


def spec(**changes: Any) -> RunnerSpec:
    values: dict[str, Any] = dict(name="r1", gitlab_id=7, token=SecretStr(TOKEN), url="https://gitlab.example.com", tags=["arm64", "linux"],
                                  run_untagged=False, kind=RunnerKind.NATIVE, platform="linux/arm64", cpus=2, memory_mb=1024)  # fmt: skip
    return RunnerSpec(**(values | changes))


def runtime(**kubernetes: Any) -> KubernetesRuntime:
    config = RunnerConfig.model_validate({"runtime": "kubernetes", "kubernetes": {"namespace": "ci"} | kubernetes})
    return KubernetesRuntime(config, "agent-a")


def test_config_toml_uses_the_kubernetes_executor() -> None:
    runner = runtime().render_config(spec())["runners"][0]
    assert runner["executor"] == "kubernetes" and "docker" not in runner and runner["token"] == TOKEN
    section = runner["kubernetes"]
    assert section["namespace"] == "ci" and section["service_account"] == "autogit-runner"
    assert section["node_selector"] == {"kubernetes.io/arch": "arm64"}
    assert section["pod_labels"] == {JOB_OF_LABEL: "r1", "autogit.io/agent": "agent-a"}
    assert (section["cpu_limit"], section["memory_limit"]) == ("2", "1024Mi")


def test_a_gpu_runner_whose_gpu_is_not_a_cluster_resource_is_refused_naming_it() -> None:
    gpu = Gpu(id="GPU-0", vendor=GpuVendor.NVIDIA, model="NVIDIA H100", memory_mb=81559)  # a host's GPU, no <node>/<resource>
    with pytest.raises(InvalidConfiguration) as refused:
        runtime().render_config(spec(gpu=gpu))
    assert refused.value.field == "runner.runtime" and "GPU-0" in str(refused.value)


def test_a_cluster_gpu_unit_becomes_the_resource_limit_and_the_node_labels_it_needs() -> None:
    """The planner's free unit of a node's GPU resource (ADR-016): the job pod holds one unit of
    that resource through the device plugin, on a node whose labels carry the job's floor and
    the chosen GPU's product, never a device path."""
    gpu = Gpu(id="gpu-node-1/nvidia.com/gpu#3", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0")
    runner = runtime().render_config(spec(gpu=gpu, tags=["gpu", "vram-ge-40g", "amd64"], platform="linux/amd64", kind=RunnerKind.GPU))["runners"][0]
    section = runner["kubernetes"]
    assert json.loads(section["pod_spec"][0]["patch"]) == {"containers": [{"name": "build", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    [term] = section["affinity"]["node_affinity"]["required_during_scheduling_ignored_during_execution"]["node_selector_terms"]
    assert {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39936"]} in term["match_expressions"]
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]} in term["match_expressions"]
    assert runner["feature_flags"] == {"FF_USE_ADVANCED_POD_SPEC_CONFIGURATION": True}
    assert "/dev/" not in json.dumps(runner)
    mig = Gpu(id="gpu-node-2/nvidia.com/mig-1g.10gb#0", vendor=GpuVendor.NVIDIA, model="NVIDIA A100", memory_mb=9728, mig_parent="gpu-node-2",
              mig_profile="1g.10gb")  # fmt: skip
    section = runtime().render_config(spec(gpu=mig, tags=["mig-1g.10gb"], platform="linux/amd64", kind=RunnerKind.GPU))["runners"][0]["kubernetes"]
    assert json.loads(section["pod_spec"][0]["patch"])["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}
    assert "affinity" not in section


def test_the_manager_pod_holds_no_token_and_takes_the_pull_policy() -> None:
    rt = runtime(image_pull_policy="Always")
    manifest = rt._pod(spec())
    assert TOKEN not in json.dumps(manifest)
    containers = manifest["spec"]["initContainers"] + manifest["spec"]["containers"]
    assert {c["imagePullPolicy"] for c in containers} == {"Always"}
    assert manifest["metadata"]["annotations"]["autogit.io/gitlab-id"] == "7"


def test_the_registry_builds_it() -> None:
    assert "kubernetes" in runtime_names()
    config = AgentConfig.model_validate({"gitlab": {"url": "https://gitlab.example.com"}, "runner": {"runtime": "kubernetes"}})
    built = build_runtime(config, "agent-a", Host(hostname="agent-a", arch="x86_64", cpus=4, memory_mb=8192))
    assert isinstance(built, KubernetesRuntime) and built.namespace == "autogit-runners"


async def test_an_unreachable_api_server_makes_list_raise_transient(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    rt = runtime(kubeconfig=str(kubeconfig), request_timeout=5)
    try:
        with pytest.raises(Transient) as unknown:
            await rt.list()
        assert "listing pods" in str(unknown.value) and TOKEN not in str(unknown.value)
    finally:
        await rt.close()


async def test_a_broken_kubeconfig_names_the_key(tmp_path: Path) -> None:
    rt = runtime(kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(InvalidConfiguration) as refused:
        await rt.list()
    assert refused.value.field == "runner.kubernetes.kubeconfig"
    await rt.close()


def test_it_meets_the_protocol() -> None:
    assert isinstance(runtime(), RunnerRuntime)


def handshake(status: int, message: str) -> aiohttp.WSServerHandshakeError:
    request = aiohttp.RequestInfo(URL("https://127.0.0.1:6443/api/v1/namespaces/ci/pods/r1/exec"), "GET", CIMultiDictProxy(CIMultiDict()))
    return aiohttp.WSServerHandshakeError(request, (), status=status, message=message)


def test_a_refused_exec_upgrade_names_pods_exec() -> None:
    refused = handshake(403, "Forbidden")
    error = translate(refused, "SIGQUIT to runner pod r1", verb="create", resource="pods/exec")
    assert isinstance(error, PermissionRefused) and error.missing == "create pods/exec"
    gone = handshake(404, "Not Found")
    assert isinstance(translate(gone, "x", verb="create", resource="pods/exec"), NotFound)
    failed = handshake(500, "Invalid response status")
    assert isinstance(translate(failed, "x", verb="create", resource="pods/exec"), Transient)


def test_a_private_ca_travels_in_the_secret_and_is_copied_beside_the_config() -> None:
    rt = runtime()
    assert "tls-ca-file" not in rt.render_config(spec())["runners"][0]
    assert rt._pod(spec())["spec"]["initContainers"][0]["command"] == ["cp", "/run/secrets/runner/config.toml", "/etc/gitlab-runner/"]
    with_ca = spec(ca_pem="-----BEGIN CERTIFICATE-----\n")
    assert rt.render_config(with_ca)["runners"][0]["tls-ca-file"] == "/etc/gitlab-runner/ca.crt"
    assert rt._pod(with_ca)["spec"]["initContainers"][0]["command"][1:3] == [
        "/run/secrets/runner/config.toml",
        "/run/secrets/runner/ca.crt",
    ]


def test_every_key_written_is_one_gitlab_runner_knows() -> None:
    """The gitlab-runner double's tables (from common/config.go): the top-level, [[runners]] and
    [runners.kubernetes] keys (with its affinity and pod_spec tables) and their Go types."""
    from unit.test_runner_config import runner_double

    for variant in (spec(), spec(ca_pem="-----BEGIN CERTIFICATE-----\n"), spec(platform="linux/riscv64", kind=RunnerKind.EMULATED)):
        doc = tomllib.loads(tomli_w.dumps(runtime().render_config(variant)))
        runner_double.validate(doc)
        assert set(doc) <= runner_double.CONFIG_KEYS
        assert set(doc["runners"][0]) <= runner_double.RUNNER_KEYS


def test_a_reload_keeps_where_it_connects_and_takes_the_rest() -> None:
    base = {"gitlab": {"url": "https://gitlab.example.com"}, "runner": {"runtime": "kubernetes", "kubernetes": {"namespace": "ci"}}}
    old = AgentConfig.model_validate(base)
    new = AgentConfig.model_validate(base | {"runner": {"runtime": "kubernetes", "kubernetes": {
        "namespace": "elsewhere", "kubeconfig": "/etc/other.kubeconfig", "image_pull_policy": "Always"}}})  # fmt: skip
    applied, restart = config_changes(old, new)
    assert applied == ["runner.kubernetes.image_pull_policy"]
    assert restart == ["runner.kubernetes.kubeconfig", "runner.kubernetes.namespace"]
    rt = KubernetesRuntime(old.runner, "agent-a")
    rt.reconfigure(new)
    assert (rt.namespace, rt.config.kubernetes.kubeconfig, rt.config.kubernetes.image_pull_policy) == ("ci", None, "Always")


@pytest.mark.parametrize(
    ("short", "value"), [("8azf1mwj_", "8azf1mwj"), ("t1_ABCDEF", "t1_ABCDEF"), ("_a.b-", "a.b"), ("a/b c", "a_b_c"), ("___", "")]
)
def test_a_short_token_becomes_a_label_value_the_api_server_accepts(short: str, value: str) -> None:
    assert label_value(short) == value
    assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", label_value(short))
