"""High availability inside the cluster (issue 22 item 1, ADR-014): `helm install` of
charts/autogit with two replicas on one Lease, `runner.runtime: kubernetes` (runner manager pods
of the stand-in image, tests/k8s/images.py: they take no job, so a job stays pending and its
runner stays up), against the GitLab double on the host. The first runner is made busy (a job
pod of its own), then `kubectl delete pod` of the leader's pod:

- the other replica holds the Lease and reports leader within the lease duration (the deleted
  one hands the Lease back on SIGTERM, so in practice within one retry period);
- at most one replica acts at any moment: each replica's acting intervals, from its own
  `leader.acquired` / `leader.lost` events (one machine, one clock), never overlap, and every
  `runner.started` falls inside its replica's interval; the Lease's holder, sampled throughout,
  names one replica at a time and changes once;
- no job is lost and nothing is duplicated: the job pending at the deletion and one queued after
  it each get exactly one registration and one manager pod; the busy runner the old leader
  started is adopted, never stopped (no stop request on its pod, although idle ones are reaped
  after 2 s); the Deployment's replacement replica follows and never acts;
- nothing leaks: once the jobs are gone the new leader drains and removes every runner and
  unregisters it, and `helm uninstall` leaves nothing of the agent's in the namespace.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from k8s.cluster import REPO, Cluster
from k8s.images import RUNNER_STAND_IN_IMAGE, runner_stand_in_archive

from autogit.gitlab_double import GitLabSimulator

pytestmark = pytest.mark.slow

RELEASE = "ag"
NAME = f"{RELEASE}-autogit"  # the chart's fullname: Deployment, Lease, hostname
OWNER_LABEL = "autogit.io/agent"
JOB_OF_LABEL = "autogit.io/job-of"
RUNNER_LABEL = "autogit.io/runner"
STOP_ANNOTATION = "autogit.io/stop-requested-at"
LEASE = {"leaseDuration": 6, "renewDeadline": 4, "retryPeriod": 1}


def values(ns: str, image: str, gitlab: str) -> dict[str, Any]:
    repo, tag = image.rsplit(":", 1)
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "gitlab": {"url": gitlab, "existingSecret": "gitlab"},
        "highAvailability": {"enabled": True, "replicas": 2, **LEASE},
        "config": {
            "gitlab": {"scope": {"kind": "projects", "projects": [1]}, "poll_interval": 1, "request_timeout": 5, "max_retries": 0},
            "fleet": {"enabled": False},
            # the stand-in never asks GitLab for a job: no "never contacted" replacement within the test
            "scaling": {"max_runners": 4, "idle_timeout": 2, "pickup_timeout": 3600, "runner_cpus": 0, "runner_memory_mb": 0,
                        "reserved_cpus": 0, "reserved_memory_mb": 0},
            "runner": {"runtime": "kubernetes", "image": RUNNER_STAND_IN_IMAGE, "drain_timeout": 600, "force_timeout": 10,
                       "kubernetes": {"namespace": ns, "service_account": f"{NAME}-runner", "image_pull_policy": "Never"}},
        },
    }  # fmt: skip


class LeaseWatch(threading.Thread):
    """Samples the Lease's holder every 0.2 s: (monotonic time, holder or None)."""

    def __init__(self, cluster: Cluster, ns: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.ns = cluster, ns
        self.samples: list[tuple[float, str | None]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            out = self.cluster.kubectl("get", "lease", NAME, "-n", self.ns, "-o", "json", check=False)
            if out.returncode == 0:
                self.samples.append((time.monotonic(), json.loads(out.stdout)["spec"].get("holderIdentity") or None))
            self.done.wait(0.2)

    def holders(self) -> list[str | None]:
        """The holders in the order seen, repeats folded."""
        seen: list[str | None] = []
        for _, holder in self.samples:
            if not seen or seen[-1] != holder:
                seen.append(holder)
        return seen


class PodLog:
    """`kubectl logs -f` of one pod into a file, kept after the pod is gone."""

    def __init__(self, cluster: Cluster, ns: str, pod: str, folder: Path) -> None:
        self.pod = pod
        self.path = folder / f"{pod}.log"
        cmd = [str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "logs", "-f", "-n", ns, pod]
        self.proc = subprocess.Popen(cmd, stdout=self.path.open("wb"), stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def times(self, kind: str) -> list[float]:
        """Times (UTC, the pod's clock: this machine's) of this replica's `kind` events."""
        out = []
        for line in self.text().splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+\s+autogit\.agent: " + re.escape(kind) + " ", line)
            if m:
                out.append(calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000)
        return out

    def acting(self, end: float) -> list[tuple[float, float]]:
        """Intervals in which this replica acted: from each leader.acquired to the next leader.lost (or `end`)."""
        events = sorted([(t, "acquired") for t in self.times("leader.acquired")] + [(t, "lost") for t in self.times("leader.lost")])
        intervals, start = [], None
        for t, kind in events:
            if kind == "acquired" and start is None:
                start = t
            elif kind == "lost" and start is not None:
                intervals.append((start, t))
                start = None
        if start is not None:
            intervals.append((start, end))
        return intervals

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def agent_pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=autogit")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def role_of(cluster: Cluster, ns: str, pod: str) -> tuple[str, str | None] | None:
    """(role, holder) as `autogit-agent status --json` in the pod says; None if it does not answer."""
    out = cluster.kubectl("exec", "-n", ns, pod, "--", "autogit-agent", "status", "--json", check=False, timeout=30)
    if out.returncode != 0:
        return None
    leadership = json.loads(out.stdout).get("leadership") or {}
    return str(leadership.get("role")), leadership.get("holder")


def wait_for(what: str, check: Callable[[], Any], timeout: float, explain: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}\n{explain()}")
        time.sleep(0.5)


def runner_pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    pods = cluster.kubectl_json("get", "pods", "-n", ns, "-l", f"{OWNER_LABEL}={NAME},{RUNNER_LABEL}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_deleting_the_leaders_pod_hands_over_to_the_other_replica_with_no_job_lost_and_nothing_twice(
    k8s_cluster: Cluster,
    k8s_namespace: str,
    agent_image: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    ns, cluster = k8s_namespace, k8s_cluster
    cluster.import_image(runner_stand_in_archive())
    logs: dict[str, PodLog] = {}
    watch = LeaseWatch(cluster, ns)
    with GitLabSimulator(host="0.0.0.0").running_in_thread() as sim:
        cluster.create_secret(ns, "gitlab", {"gitlab-token": sim.private_token})
        (tmp_path / "values.json").write_text(json.dumps(values(ns, agent_image, f"http://10.244.0.1:{sim.port}")))
        installed = False

        def explain() -> str:
            return "\n".join(f"--- {name}\n{log.text()[-2500:]}" for name, log in logs.items())

        try:
            cluster.helm("install", RELEASE, str(REPO / "charts/autogit"), "-n", ns, "-f", str(tmp_path / "values.json"), timeout=300)
            installed = True
            pods = wait_for("two Ready replicas", lambda: (p := agent_pods(cluster, ns)) and len(p) == 2 and all(map(ready, p)) and p, 240,
                            lambda: json.dumps([p["status"] for p in agent_pods(cluster, ns)])[:2000])  # fmt: skip
            names = sorted(p["metadata"]["name"] for p in pods)
            for name in names:
                logs[name] = PodLog(cluster, ns, name, tmp_path)
            watch.start()

            # One leads, the other follows and names it; the Lease says the same.
            def settled() -> tuple[str, str] | None:
                seen = {name: role_of(cluster, ns, name) for name in names}
                leaders = [n for n, r in seen.items() if r and r[0] == "leader"]
                if len(leaders) == 1 and all(r and r[1] == leaders[0] for r in seen.values()):
                    return leaders[0], next(n for n in names if n != leaders[0])
                return None

            leader, follower = wait_for("one leader and one follower", settled, 90, explain)
            assert watch.samples and watch.samples[-1][1] == leader

            # A pending job gets one registration and one manager pod, from the leader.
            first = sim.add_job(project_id=1, script=["true"]).id
            wait_for("a running manager pod for the first job",
                     lambda: len(sim.runners) == 1 and any(p["status"].get("phase") == "Running" for p in runner_pods(cluster, ns)), 120, explain)  # fmt: skip
            adopted = runner_pods(cluster, ns)[0]["metadata"]["name"]

            # That runner becomes busy: a job pod of its own (Pending for good: no node matches) while
            # its GitLab job goes. With idle_timeout 2 s an idle runner would be drained within a few
            # passes; a busy one must never be, by either leader.
            busy_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "busy-job", "namespace": ns,
                        "labels": {JOB_OF_LABEL: adopted, OWNER_LABEL: NAME}},
                        "spec": {"nodeSelector": {"autogit.test/nowhere": "x"}, "containers": [{"name": "build", "image": "autogit.local/busybox:1"}]}}  # fmt: skip
            cluster.apply(busy_pod)
            sim.cancel_job(first)
            time.sleep(3 * 2 + 2)
            assert STOP_ANNOTATION not in runner_pods(cluster, ns)[0]["metadata"].get("annotations", {}), "a busy runner was stopped"

            # A second job queued, then the leader's pod deleted (SIGTERM: the pass in flight ends, the Lease is handed back).
            second = sim.add_job(project_id=1, script=["true"]).id
            cluster.kubectl("delete", "pod", leader, "-n", ns, "--wait=false")
            deleted = time.monotonic()
            took = wait_for("the follower to lead", lambda: (r := role_of(cluster, ns, follower)) and r[0] == "leader" and time.monotonic() - deleted,
                            LEASE["leaseDuration"] + 30, explain)  # fmt: skip
            # the status poll (an exec) adds its own seconds: the Lease's own record is the exact bound
            # (the watch samples with a kubectl call of its own: wait for its sample after the change;
            # a sample's time is when its read returned, so it bounds the change from above)
            moved = wait_for("the Lease's sample naming the follower", lambda: next(
                (t for t, holder in list(watch.samples) if t >= deleted and holder == follower), None), LEASE["leaseDuration"] + 30, explain)  # fmt: skip
            assert moved is not None and moved - deleted <= LEASE["leaseDuration"] + LEASE["retryPeriod"], (moved and moved - deleted, took)

            # The Deployment's replacement replica joins as a follower and names the new leader.
            replacement = wait_for("the replacement replica Ready", lambda: next(
                (p["metadata"]["name"] for p in agent_pods(cluster, ns) if p["metadata"]["name"] not in names and ready(p)), None), 180, explain)  # fmt: skip
            logs[replacement] = PodLog(cluster, ns, replacement, tmp_path)
            wait_for("the replacement to follow", lambda: role_of(cluster, ns, replacement) == ("follower", follower), 60, explain)

            # The new leader plans: a job queued after the takeover is served too.
            third = sim.add_job(project_id=1, script=["true"]).id
            wait_for("one manager pod per job, all running",
                     lambda: len(sim.runners) == 3 and len(rp := runner_pods(cluster, ns)) == 3 and all(p["status"].get("phase") == "Running" for p in rp),
                     120, explain)  # fmt: skip
            time.sleep(3 * LEASE["retryPeriod"] + 2)  # a few more passes: nothing more may be started
            assert len(sim.registered()) == 3 and len(runner_pods(cluster, ns)) == 3, "a registration or a runner duplicated"
            assert all(sim.job(j).status == "pending" for j in (second, third))  # the stand-in takes none: none lost, none run twice
            kept = next(p for p in runner_pods(cluster, ns) if p["metadata"]["name"] == adopted)
            assert STOP_ANNOTATION not in kept["metadata"].get("annotations", {}), "the old leader's busy runner was stopped, not adopted"

            # At most one replica acted at any moment.
            now = time.time()
            intervals = sorted((start, end, name) for name, log in logs.items() for start, end in log.acting(now))
            assert [name for *_, name in intervals] == [leader, follower], (intervals, explain())  # the replacement never acted
            assert intervals[0][1] <= intervals[1][0], f"two replicas acted at once: {intervals}"
            for name, log in logs.items():
                started = log.times("runner.started")
                assert all(any(s <= t <= e for s, e, n in intervals if n == name) for t in started), (name, started, intervals)
            assert len(logs[leader].times("runner.started")) >= 1 and logs[follower].times("runner.started"), (
                "each led and started its runners"
            )
            assert sum(len(log.times("runner.started")) for log in logs.values()) == 3
            assert watch.holders()[-2:] in ([leader, follower], [None, follower]) and watch.holders().count(follower) == 1, watch.holders()

            # Nothing leaks: the jobs go, the new leader drains, removes and unregisters every runner.
            cluster.kubectl("delete", "pod", "busy-job", "-n", ns, "--wait=false")  # its job ends: now idle
            for job in (second, third):
                sim.cancel_job(job)
            wait_for("every runner removed and unregistered", lambda: not sim.runners and not runner_pods(cluster, ns), 120, explain)
        finally:
            watch.done.set()
            uninstall = (
                cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s", check=False, timeout=180) if installed else None
            )
            for log in logs.values():
                log.stop()
    assert uninstall is not None and uninstall.returncode == 0, uninstall and uninstall.stderr

    def agents_objects() -> list[str]:
        listed = cluster.kubectl(
            "get", "pods,secrets,configmaps,roles,rolebindings,serviceaccounts,leases", "-n", ns, "-o", "name"
        ).stdout.split()
        return [r for r in listed if NAME in r or "runner" in r]

    wait_for("the namespace emptied of the agent's objects", lambda: agents_objects() == [], 90, lambda: str(agents_objects()))
    assert cluster.kubectl("get", "pods,secrets", "-n", ns, "-l", f"{OWNER_LABEL}={NAME}", "-o", "name").stdout.strip() == ""
