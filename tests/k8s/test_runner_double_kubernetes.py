"""The gitlab-runner double's Kubernetes executor (gitlab_double/runner_image/kubernetes_executor.py)
on the real API server and kubelet: the double takes jobs from the GitLab double and runs each as
a job pod created from [runners.kubernetes] (labels, resources, a pod_spec patch behind its
feature flag), the pod runs on the real kubelet, GitLab sees success (or the script's exit code),
and the job pod and its scripts' Secret are deleted after the job.

Here the double runs on the host and reaches the API server through the kubeconfig, which is
gitlab-runner's fallback when it is not in a cluster (executors/kubernetes/util.go
guessClientConfig); test_k8s_runner_double_pod.py runs it as the manager pod (in-cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gitlab
from k8s.cluster import Cluster
from k8s.images import BUSYBOX_IMAGE, busybox_archive

from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL, SHORT_TOKEN_LABEL, label_value
from autogit.agent.runtime.kubernetes import POD_SPEC_FEATURE_FLAG
from autogit.agent.runtime.runner_config import short_token_v17
from autogit.gitlab_double import GitLabSimulator

DOUBLE = Path(__file__).resolve().parents[2] / "gitlab_double" / "runner_image" / "entrypoint.py"


def _config(sim: GitLabSimulator, token: str, namespace: str) -> str:
    patch = json.dumps({"containers": [{"name": "build", "env": [{"name": "FROM_PATCH", "value": "yes"}]}]})
    return (
        f'concurrent = 1\ncheck_interval = 1\nshutdown_timeout = 30\n[[runners]]\n  name = "k8s-double"\n  url = "{sim.url}"\n'
        f'  token = "{token}"\n  executor = "kubernetes"\n  [runners.feature_flags]\n    {POD_SPEC_FEATURE_FLAG} = true\n'
        f'  [runners.kubernetes]\n    namespace = "{namespace}"\n    image = "{BUSYBOX_IMAGE}"\n    helper_image = "{BUSYBOX_IMAGE}"\n'
        f'    pull_policy = ["never"]\n    service_account = "default"\n    poll_interval = 1\n    cpu_request = "50m"\n'
        f'    memory_limit = "64Mi"\n    [runners.kubernetes.pod_labels]\n      "{JOB_OF_LABEL}" = "k8s-double"\n'
        f"    [[runners.kubernetes.pod_spec]]\n      name = \"env\"\n      patch_type = \"strategic\"\n      patch = '{patch}'\n"
    )  # fmt: skip


def test_the_doubles_kubernetes_executor_runs_job_pods_on_the_real_kubelet(k8s_cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    k8s_cluster.import_image(busybox_archive())
    ns = k8s_namespace
    with GitLabSimulator(host="127.0.0.1").running_in_thread() as sim:
        gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
        gl.auth()
        assert gl.user is not None
        registration = gl.user.runners.create({"runner_type": "instance_type", "run_untagged": True, "description": "k8s-double"})
        config = tmp_path / "config.toml"
        config.write_text(_config(sim, registration.token, ns))
        good = sim.add_job(script=["echo hello from $(hostname)", "echo patched: $FROM_PATCH", "sleep 2"])
        bad = sim.add_job(script=["echo failing", "exit 3"])
        log = tmp_path / "double.log"
        env = os.environ | {"KUBECONFIG": str(k8s_cluster.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        proc = subprocess.Popen([sys.executable, "-u", str(DOUBLE), "run", "--config", str(config)], env=env,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
        seen: dict[str, dict[str, Any]] = {}
        try:
            deadline = time.monotonic() + 180
            while not all(sim.job(j.id).status in ("success", "failed") for j in (good, bad)):
                assert time.monotonic() < deadline and proc.poll() is None, f"jobs not finished: {log.read_text()[-3000:]}"
                for pod in k8s_cluster.kubectl_json("get", "pods", "-n", ns, "-l", SHORT_TOKEN_LABEL)["items"]:
                    if pod["status"].get("phase") == "Running":
                        seen[pod["metadata"]["name"]] = pod
                time.sleep(0.3)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        good_job, bad_job = sim.job(good.id), sim.job(bad.id)
        trace = bytes(good_job.trace).decode()
    assert good_job.status == "success", trace + log.read_text()[-2000:]
    assert "hello from runner-" in trace and "patched: yes" in trace  # the pod's hostname; the pod_spec patch's variable
    assert bad_job.status == "failed" and bad_job.failure_reason == "script_failure" and bad_job.exit_code == 3
    assert seen, "no job pod was seen Running"
    short = short_token_v17(registration.token)  # the double claims 17.11.3
    for pod in seen.values():
        labels, spec = pod["metadata"]["labels"], pod["spec"]
        assert spec["nodeName"] == "localhost"  # the real kubelet, not a kwok node
        assert labels[SHORT_TOKEN_LABEL] == label_value(short) and labels[JOB_OF_LABEL] == "k8s-double"
        build = spec["containers"][0]
        assert (build["name"], build["image"], spec["containers"][1]["name"]) == ("build", BUSYBOX_IMAGE, "helper")
        assert build["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}
        assert registration.token not in json.dumps(pod) and "CI_JOB_TOKEN" not in json.dumps(pod)
    deadline = time.monotonic() + 60
    while left := k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", SHORT_TOKEN_LABEL, "-o", "name").stdout.split():
        assert time.monotonic() < deadline, f"the job's objects were left: {left}"
        time.sleep(0.5)
