"""Two replicas of one agent under leader election (issue 22 item 1, ADR-014): two real
`autogit-agent run` processes stand for one Lease on the real API server, with the runtime
docker and the gitlab-runner double on the real Docker engine, against the GitLab double.
They are one logical agent (the same `hostname`: each sees and adopts the other's runners) with
the fleet off, so nothing but the Lease keeps them from both acting.

- N pending jobs → exactly N registrations and runners (one-job runners: any extra one is a
  duplicate); only the leader starts anything; `status` says leader / follower and who leads.
- kill -9 of the leader while its runner runs a job → the follower leads within
  lease_duration + retry_period, serves the jobs left, starts no duplicate, and the busy
  runner finishes its job (it is never stopped).
- the leader cut off from the API server (a TCP relay that stops relaying) while jobs keep
  coming: it starts nothing more once the other leads (never two acting at once), keeps
  running as a follower, and every job gets exactly one runner.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from agent_process import AgentProcess, idle_registrations, job_runners, until  # noqa: E402
from k8s.test_leader_election import Relay, _via  # noqa: E402
from runner_harness import finished, runner_image, short_token_labels  # noqa: E402,F401 - runner_image is a fixture

from autogit.agent.api.client import AgentClient  # noqa: E402
from autogit.agent.api.schema import LeaderRole, StatusResponse  # noqa: E402
from autogit.gitlab_double import GitLabSimulator  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LEASE = {"lease_duration": 6, "renew_deadline": 4, "retry_period": 1}


@pytest.fixture
async def sim() -> AsyncIterator[GitLabSimulator]:
    simulator = GitLabSimulator(host="127.0.0.1")
    await simulator.start()
    yield simulator
    await simulator.stop()


async def status_of(replica: AgentProcess) -> StatusResponse | None:
    try:
        async with AgentClient(replica.socket) as client:
            return await client.status()
    except Exception:  # noqa: BLE001 - not listening (yet, or any more)
        return None


async def roles(replicas: list[AgentProcess]) -> dict[str, tuple[LeaderRole, str | None]]:
    out = {}
    for r in replicas:
        st = await status_of(r)
        if st is not None and st.leadership is not None:
            out[r.dir.parent.name] = (st.leadership.role, st.leadership.holder)
    return out


def replica(identity: str, hostname: str, tmp: Path, sim: GitLabSimulator, images, namespace: str, kubeconfig: Path) -> AgentProcess:
    """One replica of the logical agent `hostname`: one-job runners (any extra one is a
    duplicate), stored runner configs shared with the other replica, the fleet off."""
    return AgentProcess(
        hostname, tmp / identity, sim.url, images, sim.private_token,
        fleet={"enabled": False}, runner={"mode": "one-job", "config_dir": str(tmp / "runners")}, scaling={"max_runners": 4},
        leader_election={"enabled": True, "namespace": namespace, "lease_name": "autogit", "identity": identity,
                         "kubeconfig": str(kubeconfig), **LEASE},
    )  # fmt: skip


def event_times(replica: AgentProcess, kind: str) -> list[float]:
    """Wall-clock times (one machine, one clock) of this replica's `kind` events, from its log."""
    text = replica.log.read_text(errors="replace") if replica.log.exists() else ""
    times = []
    for line in text.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+\s+autogit\.agent: " + re.escape(kind) + " ", line)
        if m:
            times.append(time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000)
    return times


def cleanup_docker(hostname: str, tokens: set[str]) -> None:
    """What the replicas' runners left (none is expected to be busy by now): removed."""
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.autogit.host={hostname}"], capture_output=True, text=True)
    if left.stdout.split():
        subprocess.run(["docker", "rm", "-f", *left.stdout.split()], capture_output=True)
    for name in short_token_labels(tokens):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def started_lines(replica: AgentProcess) -> list[str]:
    """The runner.started events of this replica (the daemon logs every event)."""
    text = replica.log.read_text(errors="replace") if replica.log.exists() else ""
    return [line for line in text.splitlines() if " runner.started " in line]


async def test_two_replicas_one_lease_one_runner_per_job_and_a_takeover_after_kill_9(
    k8s_cluster, k8s_namespace, sim: GitLabSimulator, runner_image, tmp_path: Path  # noqa: F811
) -> None:
    hostname = f"ha{uuid.uuid4().hex[:6]}"
    replicas = [replica(i, hostname, tmp_path, sim, runner_image, k8s_namespace, k8s_cluster.kubeconfig) for i in ("replica-a", "replica-b")]
    tokens: set[str] = set()

    def remember() -> None:
        tokens.update(r.token for r in sim.runners)

    for r in replicas:
        r.start()
    try:
        # One leads, the other follows and names it.
        async def settled() -> dict[str, tuple[LeaderRole, str | None]]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen = await roles(replicas)
                leaders = [k for k, (role, _) in seen.items() if role is LeaderRole.LEADER]
                if len(seen) == 2 and len(leaders) == 1 and all(holder == leaders[0] for _, holder in seen.values()):
                    return seen
                await asyncio.sleep(0.3)
            raise AssertionError(f"no single leader: {await roles(replicas)}\n" + "\n".join(r.tail() for r in replicas))

        seen = await settled()
        leader = next(r for r in replicas if seen[r.dir.parent.name][0] is LeaderRole.LEADER)
        follower = next(r for r in replicas if r is not leader)
        assert seen[follower.dir.parent.name] == (LeaderRole.FOLLOWER, leader.dir.parent.name)
        lease = k8s_cluster.kubectl_json("get", "lease", "autogit", "-n", k8s_namespace)
        assert lease["spec"]["holderIdentity"] == leader.dir.parent.name

        # N jobs → N runners, all started by the leader.
        first = [sim.add_job(project_id=1, script=["sleep 1", "echo ok"]).id for _ in range(3)]
        await until(lambda: (remember(), finished(sim, first))[1], 120, "three jobs", replicas)
        assert all(sim.job(j).status == "success" for j in first)
        assert len(job_runners(sim, hostname)) == 3 and idle_registrations(sim, hostname) == []
        assert len(started_lines(leader)) == 3 and started_lines(follower) == [], "only the leader starts runners"
        st = await status_of(follower)
        assert st is not None and st.counts.pending_jobs == 0  # the follower observes all the same

        # A long job on the leader's runner, more jobs queued, then kill -9 of the leader.
        long_job = sim.add_job(project_id=1, script=["sleep 15", "echo long"]).id
        await until(lambda: sim.job(long_job).status == "running", 60, "the long job to run", replicas)
        busy_runner = sim.job(long_job).runner_id
        leader.kill()
        killed = time.monotonic()
        rest = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(3)]
        took = None
        while time.monotonic() - killed < 30:
            st = await status_of(follower)
            if st is not None and st.leadership is not None and st.leadership.role is LeaderRole.LEADER:
                took = time.monotonic() - killed
                break
            await asyncio.sleep(0.2)
        assert took is not None, follower.tail()
        # within lease_duration + retry_period, plus the status poll and one retry of slack
        assert took <= LEASE["lease_duration"] + 2 * LEASE["retry_period"] + 1, took
        await until(lambda: (remember(), finished(sim, [*rest, long_job]))[1], 120, "the jobs left and the long one", [follower])
        assert all(sim.job(j).status == "success" for j in [*rest, long_job]), [(j, sim.job(j).status) for j in rest]
        assert sim.job(long_job).runner_id == busy_runner  # it ran to its end on the dead leader's runner
        assert len(job_runners(sim, hostname)) == 7 and idle_registrations(sim, hostname) == [], "no registration duplicated"
        assert len(started_lines(follower)) == 3
        lease = k8s_cluster.kubectl_json("get", "lease", "autogit", "-n", k8s_namespace)
        assert lease["spec"]["holderIdentity"] == follower.dir.parent.name
        busy_name = next(r.description for r in sim.registered() if r.id == busy_runner).rsplit(":", 1)[-1]
        stops = [line for line in follower.log.read_text(errors="replace").splitlines()
                 if busy_name in line and any(f" runner.{e} " in line for e in ("stopping", "draining", "aborting", "killed"))]  # fmt: skip
        assert stops == [], f"the new leader stopped the busy runner: {stops}"

        # A clean stop hands the Lease back.
        follower.stop()
        lease = k8s_cluster.kubectl_json("get", "lease", "autogit", "-n", k8s_namespace)
        assert not lease["spec"].get("holderIdentity"), lease["spec"]
    finally:
        for r in replicas:
            if r.alive:
                r.stop()
        remember()
        cleanup_docker(hostname, tokens)


async def test_a_leader_cut_off_from_the_api_server_starts_nothing_once_the_other_leads(
    k8s_cluster, k8s_namespace, sim: GitLabSimulator, runner_image, tmp_path: Path  # noqa: F811
) -> None:
    hostname = f"ha{uuid.uuid4().hex[:6]}"
    relay = Relay(k8s_cluster.state.api_port)
    # a reaches the API server only through the relay, and starts first so that it leads
    a = replica("replica-a", hostname, tmp_path, sim, runner_image, k8s_namespace, _via(k8s_cluster.kubeconfig, relay.port, tmp_path / "a.kubeconfig"))
    b = replica("replica-b", hostname, tmp_path, sim, runner_image, k8s_namespace, k8s_cluster.kubeconfig)
    tokens: set[str] = set()
    a.start()
    try:
        await until(lambda: bool(event_times(a, "leader.acquired")), 60, "replica-a to lead", [a])
        b.start()
        await until(lambda: bool(event_times(b, "agent.ready")), 60, "replica-b to be ready", [b])
        before = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(2)]
        await until(lambda: (tokens.update(r.token for r in sim.runners), finished(sim, before))[1], 120, "two jobs", [a, b])
        relay.cut()
        cut = time.time()
        jobs = list(before)
        while time.time() - cut < LEASE["lease_duration"] + 6:  # jobs keep coming across the takeover
            jobs.append(sim.add_job(project_id=1, script=["echo ok"]).id)
            await asyncio.sleep(1.5)
        await until(lambda: (tokens.update(r.token for r in sim.runners), finished(sim, jobs))[1], 180, "every job", [a, b])
        assert all(sim.job(j).status == "success" for j in jobs)
        lost, acquired = event_times(a, "leader.lost"), event_times(b, "leader.acquired")
        assert lost and acquired, a.tail() + b.tail()
        assert lost[0] < acquired[0], f"a stopped acting {lost[0] - cut:.2f} s after the cut, b started {acquired[0] - cut:.2f} s after it"
        assert lost[0] - cut <= LEASE["renew_deadline"] + 1.5, lost[0] - cut
        late = [t - cut for t in event_times(a, "runner.started") if t >= acquired[0]]
        assert late == [], f"replica-a started runners while replica-b led: {late}"
        assert event_times(b, "runner.started"), "replica-b served the jobs after the takeover"
        assert a.alive, "cut off, replica-a keeps running as a follower"
        st = await status_of(a)
        assert st is not None and st.leadership is not None and st.leadership.role is LeaderRole.FOLLOWER
        assert len(job_runners(sim, hostname)) == len(jobs) and idle_registrations(sim, hostname) == [], "one runner per job"
    finally:
        b.stop()
        if a.alive:
            a.kill()  # cut off, it could not hand the Lease back anyway
        relay.close()
        tokens.update(r.token for r in sim.runners)
        cleanup_docker(hostname, tokens)
