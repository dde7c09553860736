"""Benchmark: a job pending in GitLab → its job pod Running on the real test cluster, beside a
bare pod created through the API reaching Running, in the same run (goal: p50 ≤ bare + 1 s).

The job path: the GitLab double (on the host) holds a pending job; a warm runner (the
gitlab-runner double with its Kubernetes executor, on the host, reaching the API server through
the kubeconfig: `check_interval = 1`, `poll_interval = 1`, as the agent writes them) takes it,
creates the scripts' Secret and the job pod (build + helper, busybox); the clock stops when the
pod's phase is Running. The baseline: one busybox pod POSTed to the API server; the clock stops
the same way. Both are watched by the same 20 ms poll of the namespace's pods. Runs alternate.
With --cold-runs N (default 5; first), the same clock with no runner yet: the agent's reconciler
(on the host, a pass every 0.5 s) starts a manager pod (the gitlab-runner double's test image,
scripts/k8s-agent-image + tests/k8s/images.py) for the job; its p50 is printed beside the bare pod's.

    .venv/bin/python bench/k8s_job_start_bench.py [--runs 9] [--cold-runs 5] [--dir /tmp/autogit-k8s]

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
from k8s.cluster import REPO, Cluster  # noqa: E402
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


def cold_runs(cluster: Cluster, ns: str, runs: int) -> list[float]:
    """Job pending → job pod Running with no runner yet: the agent's reconciler (on the host, a pass
    every 0.5 s, as tests/k8s/test_k8s_runner_double_pod.py drives it) starts a manager pod (the
    gitlab-runner double's test image), whose executor creates the job pod. Each run waits for
    the idle runner to be reaped first."""
    import asyncio
    import threading

    from k8s.images import runner_double_archive
    from k8s.test_k8s_reconciler import agent_on, remove_all
    from k8s.test_k8s_runner_double_pod import RUNNER_SA, runner_rbac

    built = subprocess.run([str(REPO / "scripts/k8s-agent-image")], capture_output=True, text=True, timeout=3600, check=True)
    image, archive = runner_double_archive(Path(built.stdout.strip().splitlines()[-1]))
    cluster.import_image(archive, all_platforms=True)
    cluster.apply(*runner_rbac(ns))
    times: list[float] = []
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    stop = threading.Event()
    with GitLabSimulator(host="0.0.0.0").running_in_thread() as sim:

        async def agent() -> None:
            runtime, _state, reconciler = agent_on(
                cluster, sim, f"http://10.244.0.1:{sim.port}", f"b{uuid.uuid4().hex[:8]}",
                {"image": image, "job_image": BUSYBOX_IMAGE, "helper_image": BUSYBOX_IMAGE, "pull_policy": "never", "check_interval": 1},
                {"namespace": ns, "service_account": RUNNER_SA},
            )  # fmt: skip
            try:
                while not stop.is_set():
                    await reconciler.reconcile_once(full_poll=True)
                    await asyncio.sleep(0.5)
            finally:
                await remove_all(runtime)

        done = asyncio.run_coroutine_threadsafe(agent(), loop)
        try:
            for i in range(runs):
                holder: list[int] = []
                times.append(running_after(cluster, ns, SHORT_TOKEN_LABEL, lambda holder=holder: holder.append(sim.add_job(script=["sleep 1"]).id), 120))
                deadline = time.monotonic() + 180
                while sim.job(holder[0]).status not in ("success", "failed") or sim.runners or \
                        cluster.kubectl("get", "pods", "-n", ns, "-l", "autogit.io/runner", "-o", "name").stdout.strip():  # fmt: skip
                    assert time.monotonic() < deadline, "the job did not finish or its runner was not reaped"
                    time.sleep(0.2)
                print(f"cold run {i + 1}: job {times[-1]:.2f} s ({sim.job(holder[0]).status})", flush=True)
        finally:
            stop.set()
            done.result(timeout=120)
            loop.call_soon_threadsafe(loop.stop)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--dir", default="/tmp/autogit-k8s")
    parser.add_argument("--cold-runs", type=int, default=5, help="runs with no runner yet (the agent starts one); 0: none")
    opts = parser.parse_args()
    cluster = Cluster(Path(opts.dir))
    cluster.import_image(busybox_archive())
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    while cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode != 0:
        time.sleep(0.2)
    bare: list[float] = []
    job: list[float] = []
    cold: list[float] = []
    proc = None
    try:
        if opts.cold_runs:
            cold = cold_runs(cluster, ns, opts.cold_runs)
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
    if cold:
        print(f"cold (the agent starts the runner): p50 {statistics.median(cold):.2f} s, p90 {pct(cold, 0.9):.2f} s ({len(cold)} runs), "
              f"{statistics.median(cold) - statistics.median(bare):+.2f} s over bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
