"""The reconcile loop: observe (queue, containers, registrations) → plan → act → publish.

Level-triggered, like a Kubernetes controller: every pass reads the world again and computes
the desired state from it, so a lost webhook, a duplicate event or a crash of the agent itself
cannot leave anything behind. The only memory kept between passes is a cache (the last queue
snapshot between full polls, when each runner was last seen busy) that a restart may lose
without harm: idle runners are then kept a little longer, never reaped early.

Safety rules (docs/runners/restart-safety.md):
- If GitLab or Docker cannot be observed, nothing is started or stopped: what runs keeps
  running, the fault is reported, and the next pass tries again.
- A runner is stopped gracefully (SIGQUIT: no new job, exit after the current one); one still
  running `runner.drain_timeout` later is aborted (SIGTERM: gitlab-runner cancels the job and
  removes its containers within its own shutdown_timeout, `runner.force_timeout`), and only one
  that survives that too is killed. Whatever a runner leaves of its jobs is removed with it.
- Leaks are cleaned from observation alone: registrations of this host with no container,
  containers with no registration, exited containers, config directories with no container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, UTC

from pydantic import SecretStr

from .config import AgentConfig
from .gitlab.adapter import GitLabAdapter, GitLabError, QueueSnapshot, Registration, description_prefix
from .metrics import AgentMetrics, start_failure_cause
from . import __version__, fleet
from .model import Host, Job, Plan, Policy, Runner, StartRunner
from .planner import REASON_IDLE, REASON_MAKE_ROOM, REASON_UNRESPONSIVE
from .planner import plan as make_plan
from .runtime.docker import DockerError, DockerRuntime, ManagedContainer, RunnerSpec
from .state import AgentPhase, AgentState, RunnerView

__all__ = ["Reconciler"]

log = logging.getLogger("autogit.reconciler")


class Reconciler:
    START_CONCURRENCY = 4
    BACKOFF_MIN_S, BACKOFF_MAX_S = 30.0, 900.0  # after a refusal by GitLab: doubling, never a storm
    KILL_GRACE_S = 10.0  # past gitlab-runner's own forceful timeout, before SIGKILL
    def __init__(
        self,
        config: AgentConfig,
        state: AgentState,
        runtime: DockerRuntime,
        gitlab: GitLabAdapter | None,
        host_source: Callable[[], Host],
        clock: Callable[[], datetime] | None = None,
        on_pass: Callable[[float], None] | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.runtime = runtime
        self.gitlab = gitlab
        self.host_source = host_source
        self.clock = clock or (lambda: datetime.now(UTC))
        self.on_pass = on_pass
        self.metrics = metrics
        self.hostname = runtime.hostname
        self.started_at = self.clock()
        self._last_busy: dict[str, datetime] = {}
        self._queue: QueueSnapshot | None = None
        self._queue_at = 0.0
        self._registrations: list[Registration] | None = None
        self._hints: dict[int, Job] = {}  # pending jobs learned from webhooks since the last poll
        self._gone: set[int] = set()  # jobs webhooks said left pending since the last poll
        self._first_seen: dict[int, float] = {}  # job id → monotonic time first seen pending
        self._queue_key: tuple[frozenset[int], frozenset[tuple[int, str]]] | None = None
        self._stopping = False
        self._orphan_strikes: dict[str, int] = {}  # container → passes its registration was 404
        self._delete_backoff: dict[int, tuple[float, float]] = {}  # registration → (retry at, delay)
        self._create_blocked_until = 0.0
        self._create_delay = 0.0
        self._refused: dict[str, str] = {}  # what GitLab refuses now, one line each
        self._paused: set[str] = set()
        self._pause_refused_until = 0.0
        self._fleet_next = 0.0  # when the presence is refreshed and the peers' read next
        self._presence_id: int | None = None
        self._joined_at: datetime | None = None  # when this host's current fleet membership began
        self._presence_ids: dict[str, int] = {}  # hostname → its presence registration, as last read
        self._busy_ids: set[int] = set()
        self._last_full = -math.inf  # monotonic time of the latest full pass

    # --- inputs from webhooks ---------------------------------------------------------------
    def hint_job(self, status: str, job: Job) -> None:
        """A webhook told us about a job: merge it into the queue and wake the loop."""
        self._first_seen.setdefault(job.id, time.monotonic())
        if status == "pending":
            self._hints[job.id] = job
            self._gone.discard(job.id)
        else:
            self._hints.pop(job.id, None)
            self._gone.add(job.id)
        self.state.wake.set()

    # --- the loop --------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        """A full pass every poll interval (also after a failure: no retry storm against a
        GitLab or Docker that is down); quick passes in between when something wakes the loop."""
        while not self._stopping:
            # The interval is read on every turn: a config reload may change it.
            next_full = self._last_full + self._poll_interval()
            full = time.monotonic() >= next_full
            if full:
                self._last_full = time.monotonic()
                next_full = self._last_full + self._poll_interval()
            try:
                await self.reconcile_once(full_poll=full)
            except Exception:  # a bug in one pass must not end the agent; the next pass retries
                log.exception("reconcile pass failed")
                self.state.bus.publish("agent.error", "reconcile pass failed (see the journal)")
            try:
                await asyncio.wait_for(self.state.wake.wait(), timeout=max(0.05, next_full - time.monotonic()))
            except TimeoutError:
                pass
            self.state.wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self.state.wake.set()

    def _poll_interval(self) -> float:
        """gitlab.poll_interval, or longer when GitLab's rate limit asks for it (the jobs listing
        is limited per user: the adapter paces by the RateLimit-* headers and the project count)."""
        paced = self.gitlab.min_poll_interval() if self.gitlab is not None else 0.0
        return max(self.config.gitlab.poll_interval, paced)

    def poll_now(self) -> None:
        """Make the next pass a full one (e.g. the GitLab adapter was rebuilt by a reload)."""
        self._last_full = -math.inf
        self.state.wake.set()

    async def reconcile_once(self, full_poll: bool = True) -> Plan | None:
        started = time.perf_counter()
        now = self.clock()
        state = self.state
        host = self.host_source()
        state.host = host

        if self.gitlab is None:
            # Detect-only: hardware and socket live, nothing scheduled; Docker shown if present.
            try:
                containers = await self.runtime.list()
                state.set_health("docker", True)
            except DockerError as exc:
                state.set_health("docker", False, str(exc))
                containers = []
            self._publish_state(containers, [], None)
            state.set_phase(AgentPhase.DETECT_ONLY, "no GitLab URL or token configured")
            return None

        # Observe. Any failure: keep everything as it is and report.
        try:
            containers = await self.runtime.list()
            state.set_health("docker", True)
        except DockerError as exc:
            state.set_health("docker", False, str(exc))
            state.set_phase(AgentPhase.DEGRADED, "Docker unavailable; runners left as they are")
            return None
        queue = self._queue
        try:
            if full_poll or queue is None:
                queue = await self.gitlab.observe_queue()
                self._queue, self._queue_at = queue, time.monotonic()
                self._hints.clear()
                self._gone.clear()
            if full_poll or self._registrations is None:
                every = await self.gitlab.list_registrations()
                self._registrations = [r for r in every if r.host == self.hostname]
                state.fleet = await self.gitlab.fill_tags([r for r in every if r.host != self.hostname])
                self._busy_ids = {r.runner_id for r in queue.running if r.runner_id is not None}
                state.fleet_seen = now
            state.set_health("gitlab", True)
            if full_poll:
                state.set_problems("gitlab", list(queue.problems) + self._refusals())
        except GitLabError as exc:
            state.set_health("gitlab", False, str(exc))
            state.set_phase(AgentPhase.DEGRADED, "GitLab unavailable; runners left as they are")
            self._publish_state(containers, [], None)
            return None

        pending = [j for j in queue.pending if j.id not in self._gone]
        known = {j.id for j in pending}
        pending += [j for j in self._hints.values() if j.id not in known]
        for job in pending:
            self._first_seen.setdefault(job.id, time.monotonic())
        pending_ids = {j.id for j in pending}
        for job_id in list(self._first_seen):
            if job_id not in pending_ids:
                del self._first_seen[job_id]

        containers = await self._clean_up(containers, now)
        state.prune_runners(c.name for c in containers)  # drain intents of runners that are gone
        busy_runner_ids = {r.runner_id for r in queue.running if r.runner_id is not None}
        job_of = {r.runner_id: r.id for r in queue.running if r.runner_id is not None}
        runners = self._runners(containers, busy_runner_ids, now)
        host_view = host.model_copy(update={"gpus": state.gpus()})
        policy = self.config.scaling.model_copy(update={"paused": state.intents.paused or self.config.scaling.paused})
        if self.config.fleet.enabled:
            pending = await self._fleet_share(host_view, runners, pending, policy, now)
        plan = make_plan(host_view, runners, pending, policy, now)

        await self._act(plan, containers, now, full_poll)
        self._publish_queue_change(pending, plan)
        state.plan, state.plan_time = plan, now
        state.jobs = pending
        state.reconcile_count += 1
        containers = await self.runtime.list()
        self._publish_state(containers, runners, job_of)
        if self.metrics is not None:
            self.metrics.observe_pass(state, queue)
        state.set_phase(AgentPhase.RUNNING)
        if self.on_pass is not None:
            self.on_pass(time.perf_counter() - started)
        return plan

    # --- the fleet (agent/fleet.py, ADR-009) --------------------------------------------------------
    async def _fleet_share(self, host: Host, runners: list[Runner], pending: list[Job], policy: Policy, now: datetime) -> list[Job]:
        """The pending jobs this host plans for: the fleet's deterministic share of it. Every
        heartbeat_interval the host refreshes its presence in GitLab and reads its peers'; a
        host missing from that view (GitLab refuses its presence, or it lapsed) is a backstop,
        ranked after every live peer (fleet.fleet_share)."""
        assert self.gitlab is not None
        fleet_config = self.config.fleet
        state = self.state
        refreshed = False
        due = time.monotonic() >= self._fleet_next
        if due:
            own = next((p for p in state.presences if p.hostname == self.hostname), None)
            if self._joined_at is None or own is None or not fleet.is_live(own, now, fleet_config.membership_ttl):
                # A start, or a return after the peers saw this host lapse (a network cut):
                # it ranks last until they have read it again (fleet.join_settle).
                self._joined_at = now
        # What this host publishes, and what it counts as when GitLab's view lacks it (a backstop).
        presence = fleet.build_presence(host, runners, policy, version=__version__, now=now, joined_at=self._joined_at)
        if due:
            self._fleet_next = time.monotonic() + fleet_config.heartbeat_interval
            try:
                self._presence_id = await self.gitlab.publish_presence(self._presence_id, fleet.presence_registration(presence))
                read, ids = [], {}
                for reg_id, description, note, contacted in await self.gitlab.read_presences(fleet.PRESENCE_TAG):
                    contacted_at = datetime.fromisoformat(contacted.replace("Z", "+00:00")) if contacted else None
                    found = fleet.decode_presence(note, contacted_at=contacted_at)
                    if found is not None and found.hostname == fleet.presence_hostname(description):
                        read.append(found)
                        ids[found.hostname] = reg_id
                state.presences, self._presence_ids = read, ids
                self._refused.pop("fleet", None)
                refreshed = True
            except (GitLabError, fleet.PresenceTooLarge) as exc:
                self._refused["fleet"] = f"fleet presence: {exc} (meanwhile this host is a backstop: it starts only for jobs its live peers leave pending)"
        peers = [
            fleet.PeerRunner(host=reg.host or "", tags=reg.tags, run_untagged=reg.run_untagged, idle=reg.id not in self._busy_ids)
            for reg in state.fleet
            if reg.host
        ]
        mono = time.monotonic()
        first_seen = {j: now - timedelta(seconds=mono - t) for j, t in self._first_seen.items()}
        # The same pure step as `autogit-agent plan` with a scenario's fleet section (scenario.py).
        share = fleet.fleet_share(
            self.hostname, pending, state.presences, peers + fleet.runners_of(self.hostname, runners), now,
            hold_off=fleet_config.hold_off, membership_ttl=fleet_config.membership_ttl, first_seen=first_seen,
            settle=fleet.join_settle(fleet_config.heartbeat_interval), own=presence,
        )  # fmt: skip
        state.live_hosts = {p.hostname for p in share.live}
        state.ownership = share.ownership
        if refreshed:  # once per heartbeat, from the presences just read
            await self._forget_gone_hosts(now)
        return share.jobs

    async def _forget_gone_hosts(self, now: datetime) -> None:
        """Delete what peers gone for good left behind (fleet.to_forget decides what, and which
        live host does it); a few per heartbeat, so a dead rack's leftovers never burst."""
        assert self.gitlab is not None
        state = self.state
        host_of = {r.id: r.host for r in state.fleet if r.host} | {i: h for h, i in self._presence_ids.items()}
        leftovers = [fleet.Leftover(id=r.id, host=r.host, status=r.status, busy=r.id in self._busy_ids) for r in state.fleet if r.host]
        doomed = fleet.to_forget(self.hostname, leftovers, state.presences, self._presence_ids, state.live_hosts, now, self.config.fleet.forget_after)
        for reg_id in doomed[:10]:
            try:
                await self.gitlab.delete_runner(reg_id)
            except GitLabError as exc:
                self._refused["fleet forget"] = f"fleet: cannot delete registration {reg_id} left by {host_of.get(reg_id)}, a host gone for good: {exc}"
                return
            what = "presence" if reg_id in self._presence_ids.values() else "runner registration"
            state.bus.publish(
                "fleet.forgot", f"{what} {reg_id} of {host_of.get(reg_id)} deleted: its host has been silent {self.config.fleet.forget_after:.0f} s or more",
                host=host_of.get(reg_id), gitlab_id=reg_id,
            )  # fmt: skip
        self._refused.pop("fleet forget", None)

    # --- observe helpers ----------------------------------------------------------------------------
    def _never_contacted(self, c: ManagedContainer, now: datetime) -> bool:
        """Running past the bound while GitLab says its runner never asked for a job (a wrong URL,
        a CA it does not trust, a network it cannot leave): not capacity, and reported."""
        reg = next((r for r in self._registrations or [] if r.id == c.gitlab_id), None)
        bound = self.config.scaling.pickup_timeout
        if reg is None or reg.status != "never_contacted" or c.started_at is None or (now - c.started_at).total_seconds() < bound:
            self._refused.pop(f"contact {c.name}", None)
            return False
        self._refused[f"contact {c.name}"] = (
            f"runner {c.name} has not contacted GitLab {bound:.0f} s after it started: check runner.gitlab_url, "
            "gitlab.ca_file and runner.network (docker logs of the container say why); it is replaced"
        )
        return True

    def _runners(self, containers: list[ManagedContainer], busy_ids: set[int], now: datetime) -> list[Runner]:
        out = []
        drained = self.state.intents.drained_runners
        for c in containers:
            busy = c.gitlab_id in busy_ids
            if busy:
                self._last_busy[c.name] = now
            stopping = c.stopping_since is not None
            floor = [t for t in (c.started_at, self._last_busy.get(c.name), self.started_at) if t is not None]
            out.append(
                Runner(
                    id=c.name,
                    tags=c.tags,
                    run_untagged=c.run_untagged,
                    kind=c.kind,
                    platform=c.platform,
                    gpu=c.gpu,
                    reach=c.reach,
                    # A stopping runner is on its way out: count its capacity, never stop it twice.
                    busy=busy or stopping,
                    idle_since=None if busy else max(floor),
                    draining=stopping or c.name in drained or (not busy and self._never_contacted(c, now)),
                )
            )
        return out

    async def _clean_up(self, containers: list[ManagedContainer], now: datetime) -> list[ManagedContainer]:
        """Remove what leaked or finished; return the containers that remain.

        A container is an orphan only when GitLab says its registration is gone (`GET
        /runners/:id` → 404) on two passes in a row: a listing that does not show a runner (an
        admin who is a member of nothing, offset pagination while others create runners) proves
        nothing, and a running container is never removed on one observation."""
        registrations = {r.id: r for r in self._registrations or []}
        keep: list[ManagedContainer] = []
        for c in containers:
            if c.status in {"exited", "dead"}:
                await self._remove(c, "exited")
                continue
            if c.gitlab_id is None or c.gitlab_id not in registrations:
                if await self._orphaned(c):
                    await self._remove(c, "its GitLab registration is gone")
                    continue
            else:
                self._orphan_strikes.pop(c.name, None)
            await self._escalate_stop(c, now)
            keep.append(c)
        live = {c.gitlab_id for c in keep}
        for reg in list(self._registrations or []):  # what _remove() has not deleted already
            if reg.id not in live:
                await self._delete_registration(reg.id, f"registration {reg.id} ({reg.description}) has no container")
        for name in self.runtime.stale_dirs({c.name for c in containers}):
            self.runtime.discard_dir(name)
        return keep

    async def _orphaned(self, c: ManagedContainer) -> bool:
        if c.gitlab_id is None:
            return c.status != "running"  # never registered (created by hand?): only when stopped
        assert self.gitlab is not None
        exists = await self.gitlab.runner_exists(c.gitlab_id)
        if exists is not False:
            self._orphan_strikes.pop(c.name, None)
            if exists and self._registrations is not None:  # listed nowhere, yet it is there: keep it known
                self._registrations.append(Registration(id=c.gitlab_id, description=f"{description_prefix(self.hostname)}{c.name}", tags=c.tags))
            return False
        strikes = self._orphan_strikes.get(c.name, 0) + 1
        self._orphan_strikes[c.name] = strikes
        return strikes >= 2 or c.status != "running"

    async def _escalate_stop(self, c: ManagedContainer, now: datetime) -> None:
        """SIGQUIT → (drain_timeout) → SIGTERM → (force_timeout + grace) → SIGKILL."""
        runner = self.config.runner
        if c.aborting_since is not None:
            if now - c.aborting_since > timedelta(seconds=runner.force_timeout + self.KILL_GRACE_S):
                await self.runtime.force_kill(c.name)
                self.state.bus.publish("runner.killed", f"runner {c.name} did not abort within {runner.force_timeout:g}s; killed", runner=c.name)
        elif c.stopping_since is not None and now - c.stopping_since > timedelta(seconds=runner.drain_timeout):
            await self.runtime.abort(c.name)
            self.state.bus.publish(
                "runner.aborting", f"runner {c.name} did not finish its job within {runner.drain_timeout:g}s; aborting it", runner=c.name
            )

    async def _remove(self, c: ManagedContainer, why: str) -> None:
        token = self.runtime.token_of(c.name)  # deleting with it needs no user scope or role
        with self._timed("remove"):
            await self.runtime.remove(c.name)
        self._last_busy.pop(c.name, None)
        self._orphan_strikes.pop(c.name, None)
        self._paused.discard(c.name)
        self.state.bus.publish("runner.removed", f"runner {c.name} removed: {why}", runner=c.name, gitlab_id=c.gitlab_id)
        if c.gitlab_id is not None:
            await self._delete_registration(c.gitlab_id, f"runner {c.name} removed", token)

    async def _delete_registration(self, gitlab_id: int, why: str, token: SecretStr | None = None) -> None:
        """Delete it; a refusal is retried with backoff, not every pass, and never stops the
        pass: the other registrations, runners and jobs are still served."""
        assert self.gitlab is not None
        retry_at, delay = self._delete_backoff.get(gitlab_id, (0.0, 0.0))
        if time.monotonic() < retry_at:
            return
        try:
            await self.gitlab.delete_runner(gitlab_id, token)
        except GitLabError as exc:
            delay = min(self.BACKOFF_MAX_S, max(self.BACKOFF_MIN_S, delay * 2))
            self._delete_backoff[gitlab_id] = (time.monotonic() + delay, delay)
            self.state.bus.publish("registration.delete-failed", f"GitLab runner {gitlab_id}: {exc}; next try in {delay:.0f}s",
                                   gitlab_id=gitlab_id, permission=exc.permission)  # fmt: skip
            if exc.permission:
                self._refused[f"delete {gitlab_id}"] = str(exc)
            return
        self._delete_backoff.pop(gitlab_id, None)
        self._refused.pop(f"delete {gitlab_id}", None)
        if self._registrations is not None:
            self._registrations = [r for r in self._registrations if r.id != gitlab_id]
        self.state.bus.publish("registration.deleted", f"GitLab runner {gitlab_id} deleted: {why}", gitlab_id=gitlab_id)

    def _refusals(self) -> list[str]:
        return sorted(set(self._refused.values()))

    # --- act -------------------------------------------------------------------------------------------
    def _timed(self, action: str) -> contextlib.AbstractContextManager[None]:
        return self.metrics.time_scale_action(action) if self.metrics is not None else contextlib.nullcontext()

    async def _act(self, plan: Plan, containers: list[ManagedContainer], now: datetime, full_poll: bool = True) -> None:
        bus = self.state.bus
        stops = plan.stop
        if not full_poll:
            # A quick pass (webhook, hotplug, action) sees GitLab's busy state as of the last
            # poll: start what is needed now, but reap idle runners only on fresh information.
            stops = [s for s in stops if s.reason not in {REASON_IDLE, REASON_MAKE_ROOM, REASON_UNRESPONSIVE}]
        by_name = {c.name: c for c in containers}
        for stop in stops:
            with self._timed("stop"):
                await self._pause(by_name.get(stop.runner))
                await self.runtime.request_stop(stop.runner)
            bus.publish("runner.stopping", f"runner {stop.runner} stopping ({stop.reason})", runner=stop.runner, reason=stop.reason)
        for drain in plan.drain:
            with self._timed("drain"):
                await self._pause(by_name.get(drain.runner))
                await self.runtime.request_stop(drain.runner)
            bus.publish("runner.draining", f"runner {drain.runner} draining ({drain.reason}): no new job, current one finishes", runner=drain.runner, reason=drain.reason)
        for name in sorted(self.state.intents.drained_runners & {c.name for c in containers if c.stopping_since is None}):
            await self.runtime.request_stop(name)
            bus.publish("runner.draining", f"runner {name} draining (operator)", runner=name, reason="operator")
        if plan.start and time.monotonic() < self._create_blocked_until:
            return  # GitLab refused the last registration: retried after the backoff, not every pass
        if plan.start:
            # Starts are independent (registration + container each): a burst of jobs gets its
            # runners in parallel, a few at a time so GitLab and dockerd are not flooded.
            gate = asyncio.Semaphore(self.START_CONCURRENCY)

            async def start_one(start: StartRunner) -> None:
                async with gate:
                    if time.monotonic() < self._create_blocked_until:
                        return  # refused meanwhile: the others wait for the backoff too
                    try:
                        with self._timed("start"):
                            await self._start(start)
                    except (GitLabError, DockerError) as exc:
                        bus.publish("runner.start-failed", f"could not start a {start.kind.value} runner: {exc}", tags=start.tags,
                                    kind=start.kind.value, cause=start_failure_cause(exc))  # fmt: skip
                        if isinstance(exc, GitLabError) and exc.permission:
                            self._create_delay = min(self.BACKOFF_MAX_S, max(self.BACKOFF_MIN_S, self._create_delay * 2))
                            self._create_blocked_until = time.monotonic() + self._create_delay
                            self._refused["create"] = str(exc)
                        return
                    self._create_delay = 0.0
                    self._refused.pop("create", None)

            await asyncio.gather(*(start_one(s) for s in plan.start))

    async def _pause(self, c: ManagedContainer | None) -> None:
        """paused=true in GitLab before the graceful stop, so no job lands on a runner that is
        leaving; a GitLab that refuses (no manage_runner or api scope) only loses that nicety."""
        if c is None or c.gitlab_id is None or self.gitlab is None or c.name in self._paused:
            return
        if time.monotonic() < self._pause_refused_until:
            return  # refused for another runner already: asked again after the backoff
        try:
            await self.gitlab.set_paused(c.gitlab_id)
            self._paused.add(c.name)
            self._refused.pop("pause", None)
        except GitLabError as exc:
            if exc.permission:
                self._pause_refused_until = time.monotonic() + self.BACKOFF_MAX_S
                line = str(exc).replace(f"/runners/{c.gitlab_id}", "/runners/:id")
                self._refused["pause"] = f"{line} (runners are stopped without being paused first)"

    async def _start(self, start: StartRunner) -> None:
        assert self.gitlab is not None
        name = f"autogit-{self.hostname}-{start.kind.value}-{uuid.uuid4().hex[:10]}"
        description = f"{description_prefix(self.hostname)}{name}"
        t0 = time.monotonic()
        # GitLab ends a job at the runner's maximum_timeout: no job may outlive the drain deadline.
        created = await self.gitlab.create_runner(description, start.tags, start.run_untagged, reach=start.reach,
                                                  maximum_timeout=int(self.config.runner.drain_timeout))  # fmt: skip
        if self._registrations is not None:
            self._registrations.append(Registration(id=created.id, description=description, tags=start.tags))
        gpu = next((g for g in self.state.gpus() if g.id == start.gpu), None) if start.gpu else None
        own_url = self.config.runner.gitlab_url
        url = str(own_url or self.config.gitlab.url).rstrip("/")
        spec = RunnerSpec(
            name=name,
            gitlab_id=created.id,
            token=created.token,
            url=url,
            tags=start.tags,
            run_untagged=start.run_untagged,
            kind=start.kind,
            platform=start.platform,
            gpu=gpu,
            reach=start.reach,
            cpus=start.cpus,
            memory_mb=start.memory_mb,
            # GitLab's repo_url names its external URL; runners that reach it by another one
            # must clone from that one too (gitlab-runner common/build_url_helper.go).
            clone_url=url if own_url else None,
            ca_pem=self._ca_pem(),
        )
        try:
            await self.runtime.create(spec)
        except BaseException:
            # No container, no registration: never leave a registration behind.
            await self._delete_registration(created.id, "its container could not be created", created.token)
            raise
        waited = [time.monotonic() - self._first_seen[j] for j in start.for_jobs if j in self._first_seen]
        self.state.bus.publish(
            "runner.started",
            f"runner {name} started ({start.kind.value}, {start.platform}, tags [{', '.join(start.tags)}]"
            + (f", GPU {start.gpu}" if start.gpu else "")
            + (f") for jobs {start.for_jobs}" if start.for_jobs else ") for the warm pool"),
            runner=name,
            gitlab_id=created.id,
            kind=start.kind.value,
            tags=start.tags,
            platform=start.platform,
            gpu=start.gpu,
            for_jobs=start.for_jobs,
            start_seconds=round(time.monotonic() - t0, 3),
            scale_up_seconds=round(max(waited), 3) if waited else None,
        )

    def _ca_pem(self) -> str | None:
        path = self.config.gitlab.ca_file
        if path is None:
            return None
        try:
            return path.read_text()
        except OSError as exc:
            raise GitLabError(f"gitlab.ca_file: cannot read {path}: {exc.strerror}") from None

    # --- publish ------------------------------------------------------------------------------------------
    def _publish_queue_change(self, pending: list[Job], plan: Plan) -> None:
        """One `queue.changed` event when the pending set or a waiting reason changed, so
        consumers (the TUI) re-read the queue only then."""
        key = (frozenset(j.id for j in pending), frozenset((w.job, w.reason) for w in plan.waiting))
        if key == self._queue_key:
            return
        self._queue_key = key
        reasons: dict[str, int] = {}
        for w in plan.waiting:
            reasons[w.reason.value] = reasons.get(w.reason.value, 0) + 1
        summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none waiting"
        self.state.bus.publish("queue.changed", f"{len(pending)} pending ({summary})", pending=len(pending), waiting=reasons)

    def _publish_state(self, containers: list[ManagedContainer], runners: list[Runner], job_of: dict[int, int] | None) -> None:
        by_name = {r.id: r for r in runners}
        views = []
        for c in containers:
            runner = by_name.get(c.name) or Runner(
                id=c.name, tags=c.tags, run_untagged=c.run_untagged, kind=c.kind, platform=c.platform, gpu=c.gpu
            )
            job = (job_of or {}).get(c.gitlab_id) if c.gitlab_id is not None else None
            if c.stopping_since is not None:
                view_state = "stopping" if job is None else "draining"
            elif job is not None:
                view_state = "busy"
            elif c.status == "running":
                view_state = "idle"
            else:
                view_state = "starting"
            views.append(RunnerView(runner=runner, container=c.name, gitlab_id=c.gitlab_id, state=view_state, job=job, started_at=c.started_at))
        self.state.runners = views

    # --- shutdown ---------------------------------------------------------------------------------------------
    async def drain_for_shutdown(self) -> None:
        """On SIGTERM the agent stops deciding; runners keep running and are adopted by the next
        agent (restarting the agent must not disturb jobs)."""
        self.stop()

