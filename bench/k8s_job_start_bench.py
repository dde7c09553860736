"""Benchmark: a job pending in GitLab → its job pod Running on the real test cluster, beside a
bare pod created through the API reaching Running, in the same run (goal: p50 ≤ bare + 1 s).

The job path: the GitLab double (on the host) holds a pending job; a warm runner (the
gitlab-runner double with its Kubernetes executor, on the host, reaching the API server through
the kubeconfig: `check_interval = 1`, `poll_interval = 1`, as the agent writes them) takes it,
creates the scripts' Secret and the job pod (build + helper, busybox); the clock stops when the
pod's phase is Running. The baseline: one busybox pod POSTed to the API server; the clock stops
the same way. Both are watched by the same 20 ms poll of the namespace's pods. Runs alternate.
A cold runner (the agent starting a manager pod for the job) is not in these figures.

    .venv/bin/python bench/k8s_job_start_bench.py [--runs 9] [--dir /tmp/autogit-k8s]

Needs root, the test cluster scripts/k8s-up started in --dir (left running), busybox-static.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gitlab  # noqa: E402
from k8s.cluster import Cluster  # noqa: E402
from k8s.images import BUSYBOX_IMAGE, busybox_archive  # noqa: E402

from autogit.agent.runtime.k8s_runtime import SHORT_TOKEN_LABEL  # noqa: E402
from autogit.gitlab_double import GitLabSimulator  # noqa: E402

DOUBLE = Path(__file__).resolve().parents[1] / "gitlab_double" / "runner_image" / "entrypoint.py"


def running_after(cluster: Cluster, ns: str, selector: str, start: Callable[[], None], timeout: float = 60) -> float:
    """Seconds from start() until a pod matching `selector` in `ns` is Running (20 ms polls)."""
    t0 = time.monotonic()
    start()
    while True:
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout)["items"]
        if any(p["status"].get("phase") == "Running" for p in pods):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"no pod {selector} Running after {timeout:.0f} s")
        time.sleep(0.02)


def gone(cluster: Cluster, ns: str, selector: str) -> None:
    while cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "name").stdout.strip():
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--dir", default="/tmp/autogit-k8s")
    opts = parser.parse_args()
    cluster = Cluster(Path(opts.dir))
    cluster.import_image(busybox_archive())
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    while cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode != 0:
        time.sleep(0.2)
    bare: list[float] = []
    job: list[float] = []
    proc = None
    try:
        with GitLabSimulator(host="127.0.0.1").running_in_thread() as sim, tempfile.TemporaryDirectory() as tmp:
            gl = gitlab.Gitlab(sim.url, private_token=sim.private_token, timeout=10)
            gl.auth()
            assert gl.user is not None
            token = gl.user.runners.create({"runner_type": "instance_type", "run_untagged": True, "description": "bench"}).token
            config = Path(tmp) / "config.toml"
            config.write_text(
                f'concurrent = 1\ncheck_interval = 1\n[[runners]]\n  name = "bench"\n  url = "{sim.url}"\n  token = "{token}"\n'
                f'  executor = "kubernetes"\n  [runners.kubernetes]\n    namespace = "{ns}"\n    image = "{BUSYBOX_IMAGE}"\n'
                f'    helper_image = "{BUSYBOX_IMAGE}"\n    pull_policy = ["never"]\n    service_account = "default"\n    poll_interval = 1\n'
            )  # fmt: skip
            env = os.environ | {"KUBECONFIG": str(cluster.kubeconfig)}
            proc = subprocess.Popen([sys.executable, str(DOUBLE), "run", "--config", str(config)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(3)  # the runner is warm: started, polling
            for i in range(opts.runs):
                name = f"bare-{i}"
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"bench": "bare"}},
                       "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                                "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["sleep", "60"]}]}}  # fmt: skip
                bare.append(running_after(cluster, ns, "bench=bare", lambda pod=pod: cluster.kubectl("create", "-f", "-", input=json.dumps(pod))))
                cluster.kubectl("delete", "pod", name, "-n", ns, "--grace-period=0", "--wait=true")
                holder: list[int] = []
                job.append(running_after(cluster, ns, SHORT_TOKEN_LABEL, lambda holder=holder: holder.append(sim.add_job(script=["sleep 1"]).id)))
                deadline = time.monotonic() + 120
                while sim.job(holder[0]).status not in ("success", "failed"):
                    assert time.monotonic() < deadline, "the job did not finish"
                    time.sleep(0.1)
                gone(cluster, ns, SHORT_TOKEN_LABEL)
                print(f"run {i + 1}: bare {bare[-1]:.2f} s, job {job[-1]:.2f} s ({sim.job(holder[0]).status})", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False, timeout=150)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    print(f"bare pod created → Running : p50 {statistics.median(bare):.2f} s, p90 {pct(bare, 0.9):.2f} s ({len(bare)} runs)")
    print(f"job pending → job pod Running: p50 {statistics.median(job):.2f} s, p90 {pct(job, 0.9):.2f} s ({len(job)} runs)")
    print(f"difference (p50): {statistics.median(job) - statistics.median(bare):+.2f} s (goal ≤ +1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
