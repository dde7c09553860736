"""The agent's own image (scripts/k8s-agent-image: amd64 and arm64, no registry) and a real
`helm install` of charts/autogit into the test cluster, end to end: the agent pod passes its
probes on the real kubelet, answers `autogit-agent status` through `kubectl exec`, runs as uid
10001 on a read-only root filesystem, reads its token as a file (no secret in its environment);
with `runners.runtime: kubernetes` a job pending in the GitLab double (on the host) gets a
runner manager pod (the gitlab-runner double: tests/k8s/images.py runner_double_archive, the
product image has no gitlab-runner) whose Kubernetes executor runs the job pod on the real
kubelet; GitLab sees success; everything scales back to zero; `helm uninstall` leaves no
registration and nothing in the namespace. And `kubectl exec -it ... -- autogit-tui` opens the
console in the pod on a pty, reaching the agent's socket there."""

from __future__ import annotations

import io
import json
import tarfile
import subprocess
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

from k8s.cluster import REPO, Cluster
from k8s.images import BUSYBOX_IMAGE

from autogit.agent.runtime.k8s_runtime import JOB_OF_LABEL, SHORT_TOKEN_LABEL
from autogit.agent.runtime.kubernetes import RUNNER_LABEL
from autogit.gitlab_double import GitLabSimulator

ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}  # e_machine: EM_X86_64, EM_AARCH64


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    member = archive.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}")
    assert member is not None
    return member.read()


def test_the_image_holds_an_amd64_and_an_arm64_agent(agent_image_archive: Path) -> None:
    with tarfile.open(agent_image_archive) as archive:
        top = json.loads(_blob(archive, json.loads(archive.extractfile("index.json").read())["manifests"][0]["digest"]))  # type: ignore[union-attr]
        platforms = {m["platform"]["architecture"]: m for m in top["manifests"]}
        assert set(platforms) == {"amd64", "arm64"}
        for arch, entry in platforms.items():
            manifest = json.loads(_blob(archive, entry["digest"]))
            config = json.loads(_blob(archive, manifest["config"]["digest"]))
            assert config["architecture"] == arch and config["config"]["User"] == "10001:10001"
            rootfs, app = (tarfile.open(fileobj=io.BytesIO(_blob(archive, layer["digest"]))) for layer in manifest["layers"])
            python = rootfs.extractfile("./usr/bin/python3.11")
            assert python is not None and int.from_bytes(python.read(20)[18:20], "little") == ELF_MACHINE[arch]
            core = next(m for m in app.getmembers() if "pydantic_core/_pydantic_core" in m.name and m.name.endswith(".so"))
            assert int.from_bytes(app.extractfile(core).read(20)[18:20], "little") == ELF_MACHINE[arch]  # type: ignore[union-attr]
            assert "./usr/local/bin/autogit-agent" in app.getnames()


def _wait_ready(cluster: Cluster, ns: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=autogit")["items"]
        if pods and any(c["type"] == "Ready" and c["status"] == "True" for c in pods[0]["status"].get("conditions", [])):
            return pods[0]
        if time.monotonic() > deadline:
            logs = cluster.kubectl("logs", "-n", ns, "-l", "app.kubernetes.io/name=autogit", "--tail=40", check=False).stdout
            raise AssertionError(f"agent pod not Ready: {json.dumps([p['status'] for p in pods])[:1500]}\n{logs}")
        time.sleep(1)


def check_the_running_agent(cluster: Cluster, ns: str, token: str) -> None:
    pod = _wait_ready(cluster, ns)
    name = pod["metadata"]["name"]
    status = json.loads(cluster.kubectl("exec", "-n", ns, name, "--", "autogit-agent", "status", "--json").stdout)
    assert status["hostname"] == "ag-autogit"  # two replicas, one logical agent (highAvailability)
    assert status["phase"] == "running", status  # the kubernetes runtime answers (no Docker needed in the pod)
    assert cluster.kubectl("exec", "-n", ns, name, "--", "id", "-u").stdout.strip() == "10001"
    # the console is in the image too (`kubectl exec -it deploy/… -- autogit-tui`): its app and Textual import
    tui = cluster.kubectl("exec", "-n", ns, name, "--", "python3", "-c", "import autogit.tui.app, textual; print(textual.__version__)")
    assert tui.stdout.strip()[:1].isdigit(), tui
    check_the_console_in_the_pod(cluster, ns, name, status["phase"])
    env = cluster.kubectl("exec", "-n", ns, name, "--", "cat", "/proc/1/environ").stdout
    assert token not in env and "CREDENTIALS_DIRECTORY=/run/secrets/autogit" in env
    denied = cluster.kubectl("exec", "-n", ns, name, "--", "touch", "/usr/local/bin/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert token not in json.dumps(cluster.kubectl_json("get", "pod", name, "-n", ns))
    # the product image holds no gitlab-runner (the double's command is the test image's layer only)
    assert cluster.kubectl("exec", "-n", ns, name, "--", "test", "-e", "/usr/bin/gitlab-runner", check=False).returncode != 0


def check_the_console_in_the_pod(cluster: Cluster, ns: str, pod: str, phase: str) -> None:
    """`kubectl exec -it <pod> -- autogit-tui` as an operator types it, on a terminal (`script`
    gives kubectl a pty): the console starts in the pod, reaches the agent's socket there and
    draws its tabs with the agent's phase; `q` quits it with status 0."""
    command = f"kubectl --kubeconfig {cluster.kubeconfig} exec -it -n {ns} {pod} -- autogit-tui"
    proc = subprocess.Popen(["script", "-qfec", command, "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={"PATH": f"{cluster.bin}:/usr/bin:/bin", "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "36"})  # fmt: skip
    assert proc.stdin is not None
    time.sleep(12)  # Python and Textual start in the pod, connect, fetch the status
    proc.stdin.write(b"q")
    proc.stdin.flush()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    screen = out.decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    for seen in ("GPUs", "Runners", "Queue", phase):
        assert seen in screen, f"{seen!r} not drawn by autogit-tui in the pod: {screen[-2000:]!r}"



def _values(agent_image: str, runner_image: str, gitlab: str) -> dict[str, Any]:
    """The install's values: the agent and the gitlab-runner double's manager image, both local
    (pullPolicy Never), job pods from busybox, and short timeouts so that the idle runner goes soon."""
    repo, tag = agent_image.rsplit(":", 1)
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "gitlab": {"existingSecret": "gitlab", "url": gitlab},
        "runners": {"runtime": "kubernetes", "image": runner_image, "imagePullPolicy": "Never", "jobImage": BUSYBOX_IMAGE,
                    "helperImage": BUSYBOX_IMAGE, "jobPullPolicy": "never"},
        "config": {
            "gitlab": {"scope": {"kind": "projects", "projects": [1]}, "poll_interval": 1},
            "scaling": {"max_runners": 2, "idle_timeout": 2, "runner_cpus": 0, "runner_memory_mb": 0, "reserved_cpus": 0, "reserved_memory_mb": 0},
            "runner": {"drain_timeout": 600, "force_timeout": 10, "check_interval": 1},
        },
    }  # fmt: skip


def _wait(what: str, done: Callable[[], bool], cluster: Cluster, ns: str, timeout: float, sim: GitLabSimulator) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            logs = cluster.kubectl("logs", "-n", ns, "-l", "app.kubernetes.io/name=autogit", "--tail=40", "--prefix", check=False).stdout
            pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
            raise AssertionError(f"waited {timeout:.0f} s for {what}; registrations {sim.runners}\n{pods}\n{logs[-4000:]}")
        time.sleep(1)


def test_helm_install_serves_a_job_on_the_real_kubelet_scales_to_zero_and_uninstall_leaves_nothing(
    k8s_cluster: Cluster, k8s_namespace: str, agent_image: str, runner_double_image: str, tmp_path: Path
) -> None:
    """The issue's acceptance test: helm install → a job pending in the GitLab double → the agent
    starts a runner (manager pod, the gitlab-runner double) → its Kubernetes executor creates the
    job pod → it runs on the real kubelet and succeeds → the idle runner is reaped and everything
    scales back to zero → helm uninstall leaves no registration, pod or Secret."""
    ns = k8s_namespace
    job_pods: dict[str, dict[str, Any]] = {}
    with GitLabSimulator(host="0.0.0.0").running_in_thread() as sim:
        gitlab = f"http://10.244.0.1:{sim.port}"  # the host, from a pod, through the CNI bridge
        token = sim.private_token
        k8s_cluster.create_secret(ns, "gitlab", {"gitlab-token": token})
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump(_values(agent_image, runner_double_image, gitlab)))
        try:
            k8s_cluster.helm("install", "ag", str(REPO / "charts/autogit"), "-n", ns, "-f", str(values), timeout=300)
            check_the_running_agent(k8s_cluster, ns, token)
            job = sim.add_job(project_id=1, tags=[], script=["echo job pod $(hostname)"])

            def job_done() -> bool:
                for pod in k8s_cluster.kubectl_json("get", "pods", "-n", ns, "-l", JOB_OF_LABEL)["items"]:
                    job_pods[pod["metadata"]["name"]] = pod
                return sim.job(job.id).status in ("success", "failed")

            _wait("the job to finish", job_done, k8s_cluster, ns, 300, sim)
            trace = bytes(sim.job(job.id).trace).decode()
            assert sim.job(job.id).status == "success", trace
            assert "job pod runner-" in trace and 'Preparing the "kubernetes" executor' in trace
            assert job_pods and all(p["spec"].get("nodeName") == "localhost" for p in job_pods.values())
            assert all(SHORT_TOKEN_LABEL in p["metadata"]["labels"] for p in job_pods.values())  # made by the runner's executor
            assert token not in json.dumps(list(job_pods.values())) and "CI_JOB_TOKEN" not in json.dumps(list(job_pods.values()))

            def scaled_to_zero() -> bool:
                left = [k8s_cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", label, "-o", "name").stdout.split() for label in (RUNNER_LABEL, JOB_OF_LABEL)]
                return not sim.runners and left == [[], []]

            _wait("everything to scale back to zero", scaled_to_zero, k8s_cluster, ns, 240, sim)
        finally:  # cluster-scoped objects outlive the namespace: uninstall whatever happened
            uninstall = k8s_cluster.helm("uninstall", "ag", "-n", ns, "--wait", "--timeout", "120s", check=False, timeout=180)
        assert uninstall.returncode == 0, uninstall.stderr
        assert sim.runners == []  # no registration left in GitLab
    deadline = time.monotonic() + 90  # the Deployment's pod goes by garbage collection, after its graceful stop
    while True:
        left = k8s_cluster.kubectl(
            "get", "all,configmaps,secrets,roles,rolebindings,serviceaccounts,networkpolicies", "-n", ns, "-o", "name"
        ).stdout.split()
        left = [r for r in left if "ag-autogit" in r or r.startswith("pod/") or (r.startswith("secret/") and r != "secret/gitlab")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert left == []
    for kind in ("clusterrole", "clusterrolebinding"):
        assert k8s_cluster.kubectl("get", kind, f"{ns}-ag-autogit-nodes", check=False).returncode != 0
