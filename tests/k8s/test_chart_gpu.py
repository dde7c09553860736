"""A GPU job on Kubernetes, planned by the agent from the cluster's GPUs (issue 22 item 2,
ADR-015): `helm install` of the chart (one replica, `runner.runtime: kubernetes`, stand-in
managers) on a cluster whose kwok nodes publish NVIDIA DRA ResourceSlices (an L4 24GB and an
H100 80GB, tests/k8s/test_dra_scheduler.py) and the driver's DeviceClasses. The agent in its pod
has no GPU of its own: it reads the cluster's through the chart's ClusterRole, the planner gives
a `[gpu, vram-ge-40g]` job the H100 (the L4 is too small), and the runtime starts a GPU runner
whose job pods hold a claim: its ResourceClaimTemplate states the floor, its config.toml carries
the claim patch and no extended resource. A second such job waits: the H100 is held by that
runner (it is recorded on the runner's pod and read back), so no second GPU runner is started.
When the jobs go, the runner, its Secret and its template go too."""

from __future__ import annotations

import json
import tomllib
from base64 import b64decode
from pathlib import Path
from typing import Any

from k8s.cluster import REPO, Cluster
from k8s.images import runner_stand_in_archive
from k8s.test_chart_ha import NAME, RELEASE, PodLog, agent_pods, ready, runner_pods, values, wait_for
from k8s.test_dra_claims import publish_l4_and_h100, unpublish

from autogit.gitlab_double import GitLabSimulator

def test_the_agent_in_its_pod_plans_a_gpu_job_onto_the_clusters_80_gib_device_through_a_claim(
    k8s_cluster: Cluster, k8s_namespace: str, agent_image: str, fake_nodes: Any, tmp_path: Path  # noqa: F811
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.import_image(runner_stand_in_archive())
    _, h100 = publish_l4_and_h100(cluster, ns, fake_nodes, prefix="gpu")
    logs: dict[str, PodLog] = {}
    installed = False
    try:
        with GitLabSimulator(host="0.0.0.0").running_in_thread() as sim:
            cluster.create_secret(ns, "gitlab", {"gitlab-token": sim.private_token})
            chart_values = values(ns, agent_image, f"http://10.244.0.1:{sim.port}")
            chart_values["highAvailability"] = {"enabled": False}
            chart_values["config"]["hostname"] = NAME  # the runners' owner label (HA sets it; one replica would use the pod's name)
            (tmp_path / "values.json").write_text(json.dumps(chart_values))

            def explain() -> str:
                return "\n".join(f"--- {name}\n{log.text()[-3000:]}" for name, log in logs.items())

            try:
                cluster.helm("install", RELEASE, str(REPO / "charts/autogit"), "-n", ns, "-f", str(tmp_path / "values.json"), timeout=300)
                installed = True
                [pod] = wait_for("the agent Ready", lambda: (p := agent_pods(cluster, ns)) and all(map(ready, p)) and p, 240)
                logs[pod["metadata"]["name"]] = PodLog(cluster, ns, pod["metadata"]["name"], tmp_path)

                first = sim.add_job(project_id=1, tags=["gpu", "vram-ge-40g"], script=["nvidia-smi"]).id
                second = sim.add_job(project_id=1, tags=["gpu", "vram-ge-40g"], script=["nvidia-smi"]).id
                wait_for("a GPU runner's manager pod running", lambda: [p for p in runner_pods(cluster, ns) if p["status"].get("phase") == "Running"],
                         120, explain)  # fmt: skip
                [manager] = runner_pods(cluster, ns)
                runner = manager["metadata"]["name"]
                assert manager["metadata"]["annotations"]["autogit.io/gpu"] == f"{h100}/{h100}/gpu-0", "the planner gave it the H100, never the L4"
                template = cluster.kubectl_json("get", "resourceclaimtemplate", f"{runner}-gpu", "-n", ns)
                [request] = template["spec"]["spec"]["devices"]["requests"]
                assert "compareTo(quantity('39Gi')) > 0" in json.dumps(request), request
                secret = cluster.kubectl_json("get", "secret", f"{runner}-config", "-n", ns)
                section = tomllib.loads(b64decode(secret["data"]["config.toml"]).decode())["runners"][0]["kubernetes"]
                patches = [json.loads(p["patch"]) for p in section["pod_spec"]]
                assert patches == [{"containers": [{"name": "build", "resources": {"claims": [{"name": "gpu"}]}}],
                                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": f"{runner}-gpu"}]}]  # fmt: skip

                # The second job waits for the held H100: no second GPU runner, one registration.
                view = wait_for("the second job waiting", lambda: _waiting(cluster, ns, pod["metadata"]["name"], second), 60, explain)
                assert len(sim.registered()) == 1 and len(runner_pods(cluster, ns)) == 1, view
                assert view["wait"]["reason"] != "no-matching-hardware", view  # the hardware exists; it is held

                for job in (first, second):
                    sim.cancel_job(job)
                wait_for("the GPU runner removed", lambda: not sim.runners and not runner_pods(cluster, ns), 120, explain)
                assert cluster.kubectl("get", "resourceclaimtemplates", "-n", ns, "-o", "name").stdout.strip() == ""
            finally:
                if installed:
                    cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s", check=False, timeout=180)
                for log in logs.values():
                    log.stop()
    finally:
        unpublish(cluster, ns)

    def left() -> list[str]:  # the agent's pod goes by garbage collection, after its graceful stop
        return [r for r in cluster.kubectl("get", "pods,secrets", "-n", ns, "-o", "name").stdout.split() if NAME in r or "runner" in r]

    wait_for("nothing of the agent's left", lambda: left() == [], 90, lambda: str(left()))


_JOBS = """
import asyncio, json
from autogit.agent.api.client import AgentClient
async def main():
    async with AgentClient("/run/autogit/agent.sock") as client:
        print((await client.jobs()).model_dump_json())
asyncio.run(main())
"""


def _waiting(cluster: Cluster, ns: str, pod: str, job: int) -> dict[str, Any] | None:
    """The agent's view of `job` (its socket's /v1/jobs) once the plan says it waits."""
    out = cluster.kubectl("exec", "-n", ns, pod, "--", "python3", "-c", _JOBS, check=False, timeout=30)
    if out.returncode != 0:
        return None
    view = next((j for j in json.loads(out.stdout)["jobs"] if j["job"]["id"] == job), None)
    return view if view is not None and view["status"] == "waiting" else None
