"""A fleet of real `autogit-agent run` processes (distinct hostnames, sockets, state) on one
GitLab (the double) with the gitlab-runner double on the real Docker engine (ADR-009):

- N jobs → N runners at most (one more while a registration is not yet in every listing);
- kill -9 of an agent holding jobs: they are served by the others, and its registration is
  left alone while its runner still runs a job;
- a network cut between one host and GitLab (its agent and its runners in a network namespace
  whose link is taken away): the others serve its share; back, it starts no duplicates.

The GPU case (only the host with the GPU serves a GPU job) needs umockdev: test_fleet_gpu.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator

import pytest
from agent_process import FLEET, ONLINE, AgentProcess, Fleet, all_see_each_other, host_of_job, idle_registrations, job_runners, until
from ci_policy import require
from runner_harness import finished

from agent.fleet import rendezvous_order
from autogit.gitlab_double import GitLabSimulator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

@pytest.fixture
async def fleet(sim, runner_image, tmp_path) -> AsyncIterator[Fleet]:
    sim.runner_online_timeout_s = ONLINE  # GitLab's is 2 h: a runner silent that long is offline
    group = Fleet(sim, runner_image, tmp_path)
    for h in group.hosts:
        h.start()
    try:
        await all_see_each_other(group.hosts)
        yield group
    finally:
        await group.close()


ONE_JOB = {"runner": {"mode": "one-job"}}  # each runner takes exactly one job: every extra one is a duplicate


async def test_three_agent_processes_start_one_runner_per_job(sim, runner_image, tmp_path):
    group = Fleet(sim, runner_image, tmp_path, sections={i: ONE_JOB for i in range(3)})
    for h in group.hosts:
        h.start()
    try:
        await all_see_each_other(group.hosts)
        jobs = [sim.add_job(project_id=1, script=["sleep 1", "echo ok"]).id for _ in range(6)]
        await until(lambda: (group.remember_tokens(), finished(sim, jobs))[1], 120, "six jobs", group.hosts)
        assert all(sim.job(j).status == "success" for j in jobs)
        per_host = {h.hostname: len(job_runners(sim, h.hostname)) for h in group.hosts}
        idle = {h.hostname: idle_registrations(sim, h.hostname) for h in group.hosts}
        # N jobs, N runners, one more at most while a registration is not yet in every listing
        # (docs/runners/fleet.md); without the fleet each of the three would have started six.
        assert sum(len(v) for v in idle.values()) <= 1 and sum(per_host.values()) <= len(jobs) + 1, (per_host, idle)
        assert sum(1 for n in per_host.values() if n) >= 2, f"the jobs spread over the fleet: {per_host}"
        # The operator's view: every host live, with its profile and room.
        view = await group.hosts[0].fleet()
        for host in view.hosts:
            assert host.live and "amd64" in host.profiles and host.room is not None, host
    finally:
        await group.close()


async def test_kill_9_of_an_agent_holding_jobs(fleet: Fleet, sim):
    long_job = sim.add_job(project_id=1, script=["sleep 8", "echo long"]).id
    await until(lambda: sim.job(long_job).status == "running", 60, "the long job to run", fleet.hosts)
    victim = next(h for h in fleet.hosts if h.hostname == host_of_job(sim, long_job))
    victim_runner = sim.job(long_job).runner_id
    victim.kill()
    killed_at = time.monotonic()
    # Pending jobs right after the kill: the survivors still see the victim live for up to
    # membership_ttl, so some are the victim's own (rank 0) until the next rank's hold-off.
    # Jobs until three rank the victim first (hostnames carry a random tag, so six jobs alone
    # would leave it none about one run in eleven); the others are the survivors' from the start.
    hostnames = [h.hostname for h in fleet.hosts]
    jobs = []
    while sum(1 for j in jobs if rendezvous_order(j, hostnames)[0] == victim.hostname) < 3:
        jobs.append(sim.add_job(project_id=1, script=["echo ok"]).id)
    survivor = next(h for h in fleet.hosts if h is not victim)
    owned_by_victim: set[int] = set()
    while not owned_by_victim and not finished(sim, jobs) and time.monotonic() - killed_at < 4:
        view = await survivor.fleet()
        owned_by_victim = {j for x in view.hosts if x.hostname == victim.hostname for j in x.owns} & set(jobs)
        await asyncio.sleep(0.1)
    assert owned_by_victim, "the survivors never gave the dead host a job: the test would prove nothing"
    await until(lambda: (fleet.remember_tokens(), finished(sim, jobs))[1], 90, "the jobs the dead agent owned", fleet.hosts)
    served_in = time.monotonic() - killed_at
    assert all(sim.job(j).status == "success" for j in jobs)
    # The bound: poll interval + min(hold_off, membership_ttl), plus the runners' own start and
    # check_interval; generous for a 2-core machine.
    assert served_in < 0.5 + 3 + 30, served_in
    # Nobody deleted the dead host's registration while its runner ran the long job: it ends well.
    await until(lambda: finished(sim, [long_job]), 60, "the long job", fleet.hosts)
    assert sim.job(long_job).status == "success" and sim.job(long_job).runner_id == victim_runner
    assert any(r.id == victim_runner for r in sim.runners), "a live runner's registration was deleted"
    # Past forget_after the dead agent's host is "gone for good", but its runner still asks
    # GitLab for jobs (online): nobody deletes it, nor the presence of a host with one left.
    await asyncio.sleep(FLEET["forget_after"] + ONLINE + 2)
    assert any(r.id == victim_runner for r in sim.runners), "a runner that outlived its agent was deleted"
    assert not [line for h in fleet.hosts if h is not victim for line in h.forgot()]


async def test_a_host_gone_for_good_is_forgotten_once(sim, runner_image, tmp_path):
    """Power loss: the agent and its runners gone. Once its presence has been silent
    forget_after and GitLab shows its runners offline and idle, one survivor deletes them, then
    its presence; when it comes back it starts afresh (one presence, no leftovers)."""
    sim.runner_online_timeout_s = ONLINE
    group = Fleet(sim, runner_image, tmp_path, sections={i: {"scaling": {"idle_timeout": 30}} for i in range(3)})
    for h in group.hosts:
        h.start()
    try:
        await all_see_each_other(group.hosts)
        jobs = [sim.add_job(project_id=1, script=["echo ok"]).id for _ in range(6)]
        await until(lambda: (group.remember_tokens(), finished(sim, jobs))[1], 90, "the jobs", group.hosts)
        victim = next(h for h in group.hosts if job_runners(sim, h.hostname) and any(r.id in job_runners(sim, h.hostname) for r in sim.runners))
        left = sorted(r.id for r in sim.runners if r.description.startswith(f"autogit:{victim.hostname}:"))
        victim.kill()
        # Its runners freeze with it (docker pause: no contact with GitLab, nothing removed), as
        # on a power loss: the disks keep them for whenever the host comes back.
        containers = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.autogit.host={victim.hostname}"], capture_output=True, text=True)
        subprocess.run(["docker", "pause", *containers.stdout.split()], capture_output=True, check=True)
        survivors = [h for h in group.hosts if h is not victim]
        presence = f"autogit-presence:{victim.hostname}"

        def forgotten() -> bool:
            return not [r for r in sim.runners if r.description.startswith(f"autogit:{victim.hostname}:") or r.description == presence]

        await until(forgotten, FLEET["forget_after"] + ONLINE + 30, "the gone host's registrations and presence to go", group.hosts)
        lines = [line for h in survivors for line in h.forgot()]
        # one DELETE per leftover, by one survivor, and nothing of anyone else
        assert len(lines) == len(left) + 1 and all(victim.hostname in line for line in lines), lines
        assert all(sim.job(j).status == "success" for j in jobs)
        # Back (close() starts it again): its runners' registrations are gone, so it removes them
        # with their job containers and volumes, and publishes one presence again.
    finally:
        await group.close()


async def test_a_network_cut_host_comes_back_without_duplicates(sim_everywhere: GitLabSimulator, runner_image, tmp_path):
    """Host c's agent and runners live in the network namespace of an anchor container; taking
    the anchor's link away cuts the whole host off GitLab, as a switch failure would."""
    require(os.geteuid() == 0, "nsenter into the anchor's network namespace needs root")
    sim = sim_everywhere
    tag = uuid.uuid4().hex[:5]
    anchor = f"autogit-netns-{tag}"
    subprocess.run(["docker", "run", "-d", "--name", anchor, "--label", f"io.autogit.test={tag}", runner_image.job, "sleep", "3600"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", anchor], check=True, capture_output=True, text=True).stdout.strip()
        gateway = subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.Gateway}}", anchor], check=True, capture_output=True,
                                 text=True).stdout.strip()  # fmt: skip
        url = sim.url.replace("127.0.0.1", gateway)
        # Heartbeats 3 s apart: the peers learn of the host's return up to 3 s after it does.
        slow = FLEET | {"heartbeat_interval": 3, "membership_ttl": 9, "forget_after": 120}
        # One-job runners: the host comes back with no idle runner, so it must start for what
        # it owns, and any registration that ran no job is a duplicate.
        group = Fleet(sim, runner_image, tmp_path, fleet=slow, sections={i: ONE_JOB for i in range(2)})
        a, b, _ = group.hosts
        cut = AgentProcess(f"c{tag}", tmp_path, url, runner_image, sim.private_token, fleet=slow,
                           runner={"network": f"container:{anchor}", "mode": "one-job"})  # fmt: skip
        group.hosts[2] = cut
        for h in (a, b):
            h.start()
        cut.start(prefix=["nsenter", f"--net=/proc/{pid}/ns/net"])
        try:
            await all_see_each_other(group.hosts)
            warm = [sim.add_job(project_id=1, script=["echo warm"]).id for _ in range(6)]
            await until(lambda: (group.remember_tokens(), finished(sim, warm))[1], 90, "the first jobs", group.hosts)
            subprocess.run(["docker", "network", "disconnect", "bridge", anchor], check=True, capture_output=True)
            cut_jobs = [sim.add_job(project_id=1, script=["echo during"]).id for _ in range(6)]

            async def a_sees_cut_gone() -> bool:
                view = await a.fleet()
                return any(x.hostname == cut.hostname and x.live is False for x in view.hosts)

            deadline = time.monotonic() + 40
            while not await a_sees_cut_gone():
                assert time.monotonic() < deadline, "the cut host stayed live in its peers' view"
                await asyncio.sleep(0.3)
            await until(lambda: (group.remember_tokens(), finished(sim, cut_jobs))[1], 90, "the jobs during the cut", group.hosts)
            assert {host_of_job(sim, j) for j in cut_jobs} <= {a.hostname, b.hostname}
            before = {h.hostname: set(job_runners(sim, h.hostname)) for h in group.hosts}
            # Back. The moment it sees itself live again its peers do not yet (they read
            # presences once per heartbeat, 3 s here): a burst of jobs lands in that window.
            subprocess.run(["docker", "network", "connect", "bridge", anchor], check=True, capture_output=True)
            reconnected = datetime.now(UTC)

            async def rejoined() -> bool:  # live in its own view with a membership begun since
                own = next(x for x in (await cut.fleet()).hosts if x.hostname == cut.hostname)
                return bool(own.live and own.joined_at and own.joined_at >= reconnected - timedelta(seconds=2))

            deadline = time.monotonic() + 60
            while not await rejoined():
                assert time.monotonic() < deadline, "the cut host did not rejoin\n" + cut.tail()
                await asyncio.sleep(0.1)
            burst = [sim.add_job(project_id=1, script=["echo back"]).id for _ in range(6)]
            await until(lambda: (group.remember_tokens(), finished(sim, burst))[1], 90, "the burst after the cut", group.hosts)
            await all_see_each_other(group.hosts)  # and settled: now it takes its share again
            # more jobs than its two peers have room for: some are its own whatever the hash says
            later = [sim.add_job(project_id=1, script=["echo later"]).id for _ in range(12)]
            await until(lambda: (group.remember_tokens(), finished(sim, later))[1], 90, "the jobs after it settled", group.hosts)
            back = burst + later
            assert all(sim.job(j).status == "success" for j in warm + cut_jobs + back)
            after = {h.hostname: set(job_runners(sim, h.hostname)) for h in group.hosts}
            assert any(host_of_job(sim, j) == cut.hostname for j in later), f"the returning host took no share: {after}"
            # Ranked last until its peers have read it again, the returning host started for
            # nothing they started for too: had it duplicated its peers' starts it would have left
            # one idle runner per job of the burst. One at most: GitLab hands a job to whichever
            # matching runner asks first, so under load a peer's runner that finished early can take
            # the job one of its runners was just started for (CI saw it once).
            new_idle = {h.hostname: set(idle_registrations(sim, h.hostname)) - before[h.hostname] for h in group.hosts}
            assert len(new_idle[cut.hostname]) <= 1, f"runners that ran no job after the return: {new_idle}"
            # Between the two that never left, the documented bound: views read at different
            # moments may differ in a host's room (docs/runners/fleet.md, "Duplicates").
            assert sum(len(idle_registrations(sim, h.hostname)) for h in group.hosts) <= 2, after
        finally:
            await group.close()
    finally:
        subprocess.run(["docker", "rm", "-f", anchor], capture_output=True)


@pytest.fixture
async def sim_everywhere() -> AsyncIterator[GitLabSimulator]:
    """The GitLab double on every address: reached from another network namespace too."""
    simulator = GitLabSimulator(host="0.0.0.0")
    await simulator.start()
    yield simulator
    await simulator.stop()
