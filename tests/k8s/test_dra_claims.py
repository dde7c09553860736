"""A GPU runner's job pods hold a DRA claim (issue 22 item 2, ADR-015), on the real API server
and the real kube-scheduler, with ResourceSlices published for kwok nodes as the NVIDIA DRA
driver publishes them (tests/k8s/test_dra_scheduler.py; no driver is served here) and the
driver's DeviceClasses as its Helm chart writes them.

- The runtime reads DRA support from the API (resource.k8s.io/v1 served, the DeviceClass
  listed), creates the runner's ResourceClaimTemplate in its namespace from the runner's GPU
  tags (agent/dra.py claim_for), renders [runners.kubernetes] with the claim as a strategic
  `pod_spec` patch, and removes the template with the runner.
- A job pod built from that rendered section the way gitlab-runner builds one
  (executors/kubernetes/kubernetes.go preparePodConfig: namespace, labels, service account,
  node selector, tolerations, affinity, a `build` and a `helper` container) with the `pod_spec`
  patches applied by Kubernetes' own strategic-merge code (`kubectl patch --local --type
  strategic`, the strategicpatch.StrategicMergePatch that doPodSpecMerge calls) is allocated
  the 80 GiB device, never the 24 GiB one; a second one, which no free device fits, stays
  Pending with the scheduler's reason.
- The runtime runs as a ServiceAccount holding exactly the rules the chart grants
  (AGENT_RULES, AGENT_CLUSTER_RULES). One that may not list DeviceClasses: support is unknown, not absent; the runtime
  starts nothing for a GPU runner (no Secret, no pod, no template) and says why.
"""

from __future__ import annotations

import json
import time
import tomllib
from base64 import b64decode
from pathlib import Path
from typing import Any

from k8s.cluster import Cluster
from k8s.images import RUNNER_STAND_IN_IMAGE, runner_stand_in_archive
from k8s.nodes import FAKE_TOLERATION, fake_node
from k8s.rbac import service_account_kubeconfig
from k8s.test_dra_scheduler import _unschedulable, _wait, device_class, resource_slice
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import load_kube_config
from pydantic import SecretStr

from autogit.agent.config import AgentConfig, RunnerConfig
from autogit.agent.daemon import Agent
from autogit.agent.dra import GPU_CLASS, Undecided, gpu_path
from autogit.agent.errors import Transient
from autogit.agent.model import Gpu, GpuVendor, RunnerKind
from autogit.agent.runtime import RunnerSpec
from autogit.agent.runtime.dra_support import read_support
from autogit.agent.runtime.k8s_runtime import KubernetesRuntime
from autogit.agent.runtime.kubernetes import AGENT_CLUSTER_RULES, AGENT_RULES
from autogit.agent.tags import gpu_tags

SLICE_LABEL = "autogit.test/dra-claims"
H100 = Gpu(id="x/nvidia.com/gpu", vendor=GpuVendor.NVIDIA, model="NVIDIA H100 80GB HBM3", memory_mb=81559, compute_capability="9.0")
TAGS = ["amd64", "x86_64", "gpu", "nvidia", "vram-ge-40g", "ci-pool-a"]  # ci-pool-a: a scaling.extra_tags tag, the node's, not the claim's


def publish_l4_and_h100(cluster: Cluster, ns: str, fake_nodes: Any, prefix: str = "dra") -> tuple[str, str]:
    """Two kwok nodes whose ResourceSlices hold an L4 24GB and an H100 80GB, and the driver's
    DeviceClasses; `unpublish` takes them away (the nodes go with the fake_nodes fixture)."""
    l4, h100 = f"{prefix}-l4-{ns}", f"{prefix}-h100-{ns}"
    fake_nodes(*(fake_node(n, labels={"autogit.test/dra": ns}) for n in (l4, h100)))
    slices = [resource_slice(l4, "NVIDIA L4", 23034, "8.9"), resource_slice(h100, "NVIDIA H100 80GB HBM3", 81559, "9.0")]
    for s in slices:
        s["metadata"]["labels"] = {SLICE_LABEL: ns}
    classes = [device_class("gpu.nvidia.com", "gpu"), device_class("mig.nvidia.com", "mig")]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": classes + slices}))
    return l4, h100


def unpublish(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("delete", "resourceslices", "-l", f"{SLICE_LABEL}={ns}", check=False)
    cluster.kubectl("delete", "deviceclass", "gpu.nvidia.com", "mig.nvidia.com", check=False)


def runner_spec(name: str) -> RunnerSpec:
    return RunnerSpec(name=name, gitlab_id=7, token=SecretStr("glrt-t1_DRA0123456789"), url="http://gitlab.invalid", tags=TAGS,
                      run_untagged=False, kind=RunnerKind.NATIVE, platform="linux/amd64", cpus=0, memory_mb=0, gpu=H100)  # fmt: skip


def runtime(ns: str, kubeconfig: Path) -> KubernetesRuntime:
    config = RunnerConfig.model_validate({"runtime": "kubernetes", "image": RUNNER_STAND_IN_IMAGE, "job_image": "autogit-test/none:1",
                                          "kubernetes": {"namespace": ns, "kubeconfig": str(kubeconfig), "service_account": "default",
                                                         "image_pull_policy": "Never"}})  # fmt: skip
    return KubernetesRuntime(config, f"dra-{ns}")


def _tolerations(node_tolerations: dict[str, str]) -> list[dict[str, str]]:
    """gitlab-runner's getPodTolerations: `key=value = Effect` is Equal, `key = Effect` Exists."""
    out = []
    for key_value, effect in node_tolerations.items():
        key, eq, value = key_value.partition("=")
        out.append({"key": key, "operator": "Equal", "value": value, "effect": effect} if eq else {"key": key, "operator": "Exists", "effect": effect})
    return out


def _camel(value: Any) -> Any:
    """config.toml's snake_case affinity keys as the API's camelCase (gitlab-runner's GetAffinity maps them one to one)."""
    if isinstance(value, dict):
        return {k.split("_")[0] + "".join(w.title() for w in k.split("_")[1:]): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def job_pod(cluster: Cluster, section: dict[str, Any], name: str, tmp: Path) -> dict[str, Any]:
    """The job pod gitlab-runner would create from `section`, its pod_spec patches applied in order
    by the API machinery's strategic merge on a PodSpec (as doPodSpecMerge does)."""
    security = {"privileged": section["privileged"], "allowPrivilegeEscalation": section["allow_privilege_escalation"]}
    spec: dict[str, Any] = {
        "serviceAccountName": section["service_account"], "restartPolicy": "Never", "nodeSelector": section.get("node_selector", {}),
        "tolerations": _tolerations(section.get("node_tolerations", {})),
        "containers": [{"name": "build", "image": section["image"], "securityContext": security},
                       {"name": "helper", "image": section["image"], "securityContext": security}],
    }  # fmt: skip
    if "affinity" in section:
        spec["affinity"] = _camel(section["affinity"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": section["namespace"], "labels": section["pod_labels"]}, "spec": spec}
    for patch in section.get("pod_spec", []):
        assert patch["patch_type"] == "strategic"
        path = tmp / f"{name}.json"
        path.write_text(json.dumps(pod))
        out = cluster.kubectl("patch", "--local", "-f", str(path), "--type", "strategic", "-p", json.dumps({"spec": json.loads(patch["patch"])}), "-o", "json")
        pod = json.loads(out.stdout)
    return pod


def _client(kubeconfig: Path) -> Any:
    async def make() -> ApiClient:
        configuration = Configuration()
        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration, persist_config=False)
        return ApiClient(configuration)

    return make()


async def test_a_gpu_runners_job_pods_hold_a_claim_allocated_the_80_gib_device_never_the_24_gib_one(
    k8s_cluster: Cluster, k8s_namespace: str, fake_nodes: Any, tmp_path: Path
) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    cluster.import_image(runner_stand_in_archive())
    _, h100 = publish_l4_and_h100(cluster, ns, fake_nodes)
    try:
        # exactly what the chart grants: the runtime needs no more
        with service_account_kubeconfig(cluster, ns, tmp_path, AGENT_RULES, AGENT_CLUSTER_RULES) as kubeconfig:
            await _claims_on_job_pods(cluster, ns, kubeconfig, tmp_path, h100)
    finally:
        cluster.kubectl("delete", "pods", "--all", "-n", ns, "--wait=true", "--timeout=60s", check=False, timeout=90)
        unpublish(cluster, ns)


async def _claims_on_job_pods(cluster: Cluster, ns: str, kubeconfig: Path, tmp_path: Path, h100: str) -> None:
    rt = runtime(ns, kubeconfig)
    name = "r-dra"
    try:
        # What the runtime reads: the group is served, the driver's class is there: the DRA path.
        client = await _client(kubeconfig)
        try:
            support = await read_support(client, 10)
        finally:
            await client.close()
        assert support.served is True and support.classes is not None and GPU_CLASS in support.classes
        assert gpu_path(support, H100) == "dra"

        await rt.create(runner_spec(name))
        template = cluster.kubectl_json("get", "resourceclaimtemplate", f"{name}-gpu", "-n", ns)
        assert template["metadata"]["labels"] == {"autogit.io/runner": name, "autogit.io/agent": f"dra-{ns}"}
        [request] = template["spec"]["spec"]["devices"]["requests"]
        assert request["exactly"]["deviceClassName"] == GPU_CLASS and "compareTo(quantity('39Gi')) > 0" in request["exactly"]["selectors"][0]["cel"]["expression"]
        secret = cluster.kubectl_json("get", "secret", f"{name}-config", "-n", ns)
        runner = tomllib.loads(b64decode(secret["data"]["config.toml"]).decode())["runners"][0]
        section = runner["kubernetes"]
        assert runner["feature_flags"] == {"FF_USE_ADVANCED_POD_SPEC_CONFIGURATION": True}
        assert "nvidia.com/gpu" not in json.dumps(section), "the claim replaces the extended resource"

        # The kwok nodes are tainted (so that nobody else's pods land there): the test's only
        # addition to the section, in gitlab-runner's own key.
        key, value = FAKE_TOLERATION["key"], "fake"
        section["node_tolerations"] = {f"{key}={value}": FAKE_TOLERATION["effect"]}
        first = job_pod(cluster, section, "job-a", tmp_path)
        assert first["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": f"{name}-gpu"}]
        build = next(c for c in first["spec"]["containers"] if c["name"] == "build")
        assert build["resources"]["claims"] == [{"name": "gpu"}] and build["image"] == "autogit-test/none:1"
        assert "claims" not in next(c for c in first["spec"]["containers"] if c["name"] == "helper").get("resources", {})
        cluster.apply(first)
        node = _wait(lambda: cluster.kubectl_json("get", "pod", "job-a", "-n", ns)["spec"].get("nodeName"), "job-a bound")
        assert node == h100
        [claim] = cluster.kubectl_json("get", "resourceclaims", "-n", ns)["items"]
        assert [(r["pool"], r["device"]) for r in claim["status"]["allocation"]["devices"]["results"]] == [(h100, "gpu-0")]

        # A second job of that runner: the H100 is taken, the L4 does not fit: Pending, with the scheduler's reason.
        cluster.apply(job_pod(cluster, section, "job-b", tmp_path))
        message = _wait(lambda: _unschedulable(cluster, ns, "job-b"), "job-b unschedulable")
        assert "claim" in message.lower(), message
        assert not cluster.kubectl_json("get", "pod", "job-b", "-n", ns)["spec"].get("nodeName")

        # A template the agent left when it died before the Secret: swept; the live runner's stays.
        stray = json.loads(json.dumps(template))
        stray["metadata"] = {"name": "gone-gpu", "namespace": ns, "labels": {"autogit.io/runner": "gone", "autogit.io/agent": f"dra-{ns}"}}
        cluster.apply(stray)
        assert await rt.leftovers({name}) == ["gone-gpu"]
        assert cluster.kubectl("get", "resourceclaimtemplate", f"{name}-gpu", "-n", ns, check=False).returncode == 0

        # Removed with the runner: its job pods (and the claims they own), its Secret, its template.
        await rt.remove(name)
        assert cluster.kubectl("get", "resourceclaimtemplate", f"{name}-gpu", "-n", ns, check=False).returncode != 0
        _wait(lambda: True if not cluster.kubectl_json("get", "pods,secrets", "-n", ns, "-l", f"autogit.io/agent=dra-{ns}")["items"] else None,
              "the runner's pods and Secret gone")  # fmt: skip
    finally:
        await rt.close()


async def test_dra_support_that_cannot_be_read_is_unknown_and_starts_no_gpu_runner(k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    cluster, ns = k8s_cluster, k8s_namespace
    # A ServiceAccount with the runtime's namespaced rights (AGENT_RULES) but no ClusterRole: it may not list DeviceClasses.
    with service_account_kubeconfig(cluster, ns, tmp_path, AGENT_RULES) as path:
        await _unknown_support_starts_nothing(cluster, ns, path)


async def _unknown_support_starts_nothing(cluster: Cluster, ns: str, path: Path) -> None:
    client = await _client(path)
    try:
        support = await read_support(client, 10)
    finally:
        await client.close()
    assert support.served is True and support.classes is None, support  # the discovery document is anyone's; the list is not
    assert support.problem is not None and "list deviceclasses.resource.k8s.io" in support.problem
    decided = gpu_path(support, H100)
    assert isinstance(decided, Undecided), "an error reading DRA support was taken for no DRA"

    rt = runtime(ns, path)
    try:
        try:
            await rt.create(runner_spec("r-unknown"))
            raise AssertionError("a GPU runner was created while DRA support was unknown")
        except Transient as exc:
            assert "GPU path not decided" in str(exc) and "deviceclasses" in str(exc)
    finally:
        await rt.close()
    left = cluster.kubectl("get", "pods,secrets,resourceclaimtemplates", "-n", ns, "-l", "autogit.io/runner=r-unknown", "-o", "name").stdout
    assert left.strip() == ""


async def test_the_agent_plans_with_the_clusters_gpus_and_keeps_them_while_they_cannot_be_read(
    k8s_cluster: Cluster, k8s_namespace: str, fake_nodes: Any, tmp_path: Path
) -> None:
    """The daemon (runner.runtime kubernetes) adds the cluster's DRA GPUs to the planner's host;
    a device gone from the slices goes from the host; a read that is refused changes nothing
    (unknown is not absent: the GPUs are not taken for gone)."""
    cluster, ns = k8s_cluster, k8s_namespace
    l4, h100 = publish_l4_and_h100(cluster, ns, fake_nodes)
    try:
        with service_account_kubeconfig(cluster, ns, tmp_path, AGENT_RULES, AGENT_CLUSTER_RULES) as kubeconfig:
            config = AgentConfig.model_validate({
                "hostname": f"dra-{ns}", "api": {"socket": str(tmp_path / "agent.sock")}, "gpu": {"vendors": []}, "fleet": {"enabled": False},
                "runner": {"runtime": "kubernetes", "kubernetes": {"namespace": ns, "kubeconfig": str(kubeconfig)}},
            })  # fmt: skip
            agent = Agent(config, None)
            try:
                ours = {f"{l4}/{l4}/gpu-0", f"{h100}/{h100}/gpu-0"}

                def host_gpus() -> set[str]:
                    return {g.id for g in agent.reconciler.host_source().gpus} & ours  # other tests' slices may be there too

                await agent._read_cluster_gpus()
                assert host_gpus() == ours and agent.state.wake.is_set()
                h100_gpu = next(g for g in agent.reconciler.host_source().gpus if g.id == f"{h100}/{h100}/gpu-0")
                assert {"gpu", "vram-80g", "vram-ge-40g", "cc-9.0"} <= set(gpu_tags(h100_gpu))  # the host's tags for the board

                cluster.kubectl("delete", "resourceslice", f"{l4}-gpu")
                await agent._read_cluster_gpus()
                assert host_gpus() == {f"{h100}/{h100}/gpu-0"}  # gone from the slices: gone from the host

                cluster.kubectl("delete", "clusterrolebinding", f"{ns}-agent")  # DeviceClasses can no longer be read
                await _refused_for_sure(kubeconfig)
                await agent._read_cluster_gpus()
                assert host_gpus() == {f"{h100}/{h100}/gpu-0"}, "a refused read was taken for no GPUs"
            finally:
                await agent.runtime.close()
                agent.gpus.close()
    finally:
        unpublish(cluster, ns)


async def _refused_for_sure(kubeconfig: Path) -> None:
    """RBAC changes reach the authorizer's cache within moments: wait until the list is refused."""
    for _ in range(50):
        client = await _client(kubeconfig)
        try:
            if (await read_support(client, 10)).classes is None:
                return
        finally:
            await client.close()
        time.sleep(0.2)
    raise AssertionError("listing DeviceClasses still allowed after the ClusterRoleBinding went")
