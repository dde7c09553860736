"""The agent's own image (scripts/k8s-agent-image: amd64 and arm64, no registry) and a real
`helm install` of charts/autogit into the test cluster: the agent pod passes its probes on the
real kubelet, answers `autogit-agent status` through `kubectl exec`, opens `autogit-tui` through
`kubectl exec -it` on a pty (the console in the pod reaching the agent's socket), runs as uid 10001 on a
read-only root filesystem, reads its token as a file (no secret in its environment), and
`helm uninstall` leaves nothing in the namespace.

What it cannot show yet: the `kubernetes` runtime is not written (ADR-013), so the agent still
drives the Docker runtime of its config and reports it failing (no Docker inside the pod)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from k8s.cluster import REPO, Cluster

from autogit.gitlab_double import GitLabSimulator

ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}  # e_machine: EM_X86_64, EM_AARCH64


@pytest.fixture(scope="session")
def agent_image_archive() -> Path:
    out = subprocess.run([str(REPO / "scripts/k8s-agent-image")], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def agent_image(k8s_cluster: Cluster, agent_image_archive: Path) -> str:
    k8s_cluster.import_image(agent_image_archive.read_bytes(), all_platforms=True)
    version = next(line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines() if line.startswith("version = "))
    return f"docker.io/autogit/agent:{version}"


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
    # Docker is absent in the pod and no kubernetes runtime exists yet: honestly degraded, still serving
    assert status["phase"] == "degraded" and status["docker"]["ok"] is False, status
    assert status["hostname"] == "ag-autogit"  # two replicas, one logical agent (highAvailability)
    assert cluster.kubectl("exec", "-n", ns, name, "--", "id", "-u").stdout.strip() == "10001"
    # the console is in the image too (`kubectl exec -it deploy/… -- autogit-tui`): its app and Textual import
    tui = cluster.kubectl("exec", "-n", ns, name, "--", "python3", "-c", "import autogit.tui.app, textual; print(textual.__version__)")
    assert tui.stdout.strip()[:1].isdigit(), tui
    check_the_console_in_the_pod(cluster, ns, name)
    env = cluster.kubectl("exec", "-n", ns, name, "--", "cat", "/proc/1/environ").stdout
    assert token not in env and "CREDENTIALS_DIRECTORY=/run/secrets/autogit" in env
    denied = cluster.kubectl("exec", "-n", ns, name, "--", "touch", "/usr/local/bin/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert token not in json.dumps(cluster.kubectl_json("get", "pod", name, "-n", ns))


def check_the_console_in_the_pod(cluster: Cluster, ns: str, pod: str) -> None:
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
    for seen in ("GPUs", "Runners", "Queue", "degraded"):
        assert seen in screen, f"{seen!r} not drawn by autogit-tui in the pod: {screen[-2000:]!r}"


def test_helm_install_runs_the_agent_on_the_real_kubelet_and_uninstall_leaves_nothing(
    k8s_cluster: Cluster, k8s_namespace: str, agent_image: str
) -> None:
    ns = k8s_namespace
    with GitLabSimulator(host="0.0.0.0").running_in_thread() as sim:
        gitlab = f"http://10.244.0.1:{sim.port}"  # the host, from a pod, through the CNI bridge
        token = sim.private_token
        k8s_cluster.kubectl("create", "secret", "generic", "gitlab", "-n", ns, f"--from-literal=gitlab-token={token}")
        repo, tag = agent_image.rsplit(":", 1)
        try:
            k8s_cluster.helm("install", "ag", str(REPO / "charts/autogit"), "-n", ns, "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
                             "--set", "image.pullPolicy=Never", "--set", "gitlab.existingSecret=gitlab", "--set", f"gitlab.url={gitlab}",
                             "--set", "config.gitlab.scope.kind=projects", "--set", "config.gitlab.scope.projects[0]=1", timeout=300)  # fmt: skip
            check_the_running_agent(k8s_cluster, ns, token)
        finally:  # cluster-scoped objects outlive the namespace: uninstall whatever happened
            uninstall = k8s_cluster.helm("uninstall", "ag", "-n", ns, "--wait", "--timeout", "120s", check=False, timeout=180)
    assert uninstall.returncode == 0, uninstall.stderr
    deadline = time.monotonic() + 90  # the Deployment's pod goes by garbage collection, after its graceful stop
    while True:
        left = k8s_cluster.kubectl(
            "get", "all,configmaps,secrets,roles,rolebindings,serviceaccounts,networkpolicies", "-n", ns, "-o", "name"
        ).stdout.split()
        left = [r for r in left if "ag-autogit" in r]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert left == []
    for kind in ("clusterrole", "clusterrolebinding"):
        assert k8s_cluster.kubectl("get", kind, f"{ns}-ag-autogit-nodes", check=False).returncode != 0

