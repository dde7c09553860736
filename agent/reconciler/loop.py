"""The loop: passes (full every poll interval, quick between when something wakes it), each
observe → decide → act → publish, under a pass id its log lines carry."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime

from ..errors import AdapterError
from ..gitlab.adapter import GitLabError, QueueSnapshot
from ..inventory.kubernetes import NodeHardware, Unservable, cluster_host, unservable
from ..model import Host, Job, JobWait, Observation, Plan, Runner, WaitReason
from ..planner import decide
from ..runtime.base import RunnerInstance
from ..state import AgentPhase
from .act import ActStep
from .fleet import FleetStep
from .observe import ObserveStep
from .passlog import PASS_ID, log, next_pass_id

__all__ = ["Reconciler"]


class Reconciler(ObserveStep, ActStep, FleetStep):
    # --- inputs from webhooks ---------------------------------------------------------------
    def hint_job(self, status: str, job: Job) -> None:
        """A webhook told us about a job: merge it into the queue and wake the loop."""
        self._first_seen.setdefault(job.id, self.monotonic())
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
        GitLab or runtime that is down); quick passes in between when something wakes the loop."""
        while not self._stopping:
            # The interval is read on every turn: a config reload may change it.
            next_full = self._last_full + self._poll_interval()
            full = self.monotonic() >= next_full
            if full:
                self._last_full = self.monotonic()
                next_full = self._last_full + self._poll_interval()
            try:
                await self.reconcile_once(full_poll=full)
            except Exception:  # a bug in one pass must not end the agent; the next pass retries
                log.exception("reconcile pass failed")
                self.state.bus.publish("agent.error", "reconcile pass failed (see the journal)")
            try:
                await asyncio.wait_for(self.state.wake.wait(), timeout=max(0.05, next_full - self.monotonic()))
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
        token = PASS_ID.set(next_pass_id())
        try:
            return await self._pass(full_poll)
        finally:
            PASS_ID.reset(token)

    async def _pass(self, full_poll: bool) -> Plan | None:
        started = self.monotonic()
        now = self.clock()
        state = self.state
        host = self.host_source()
        state.host = host
        instances = await self._list_instances()
        if self.cluster is not None:
            state.cluster = self.cluster.report()
        if self.gitlab is None:
            # Detect-only: hardware and socket live, nothing scheduled; the runtime shown if present.
            self._publish_state(instances or [], [], None)
            state.set_phase(AgentPhase.DETECT_ONLY, "no GitLab URL or token configured")
            return None
        if instances is None:
            state.set_phase(AgentPhase.DEGRADED, "runtime unavailable; runners left as they are")
            return None
        hardware = self.cluster.hardware() if self.cluster is not None else None
        if self.cluster is not None and hardware is None:
            # Unknown is not "no nodes": planning now would stop runners and call jobs unservable.
            self._publish_state(instances, [], None)
            state.set_phase(AgentPhase.DEGRADED, f"cluster inventory unknown ({self.cluster.why_unknown()}); runners left as they are")
            return None
        try:
            queue = await self._observe_gitlab(full_poll, now)
            state.set_health("gitlab", True)
            if full_poll:
                state.set_problems("gitlab", list(queue.problems) + self._refusals())
        except GitLabError as exc:
            state.set_health("gitlab", False, str(exc))
            state.set_phase(AgentPhase.DEGRADED, "GitLab unavailable; runners left as they are")
            self._publish_state(instances, [], None)
            return None
        plan, pending, runners = await self._decide(host, instances, queue, full_poll, now, hardware)
        # A follower (leader election) observes, decides and publishes like the leader, so that
        # it can take over with a warm view; it carries nothing out (_act asks before each action).
        await self._act(plan, {c.name for c in instances})
        state.set_problems("docker", sorted(self._runtime_problems.values()))
        state.prune_runners(c.name for c in instances if c.name not in {r.runner for r in plan.remove})  # drain intents of runners gone
        self._publish_queue_change(pending, plan)
        state.plan, state.plan_time = plan, now
        state.jobs = pending
        state.reconcile_count += 1
        job_of = {r.runner_id: r.id for r in queue.running if r.runner_id is not None}
        self._publish_state(await self._list_instances() or instances, runners, job_of)
        if self.metrics is not None:
            self.metrics.observe_pass(state, queue)
        state.set_phase(AgentPhase.RUNNING)
        if self.on_pass is not None:
            self.on_pass(self.monotonic() - started)
        return plan

    async def _list_instances(self) -> list[RunnerInstance] | None:
        """The runtime's instances, or None when it cannot be read (then nothing changes)."""
        try:
            instances = await self.runtime.list()
        except AdapterError as exc:
            self.state.set_health("docker", False, str(exc))
            return None
        self.state.set_health("docker", True)
        return instances

    async def _decide(
        self, host: Host, instances: list[RunnerInstance], queue: QueueSnapshot, full_poll: bool, now: datetime,
        hardware: list[NodeHardware] | None = None,
    ) -> tuple[Plan, list[Job], list[Runner]]:
        state = self.state
        pending = self._pending(queue)
        await self._count_missing(instances)
        runners = self._runners(instances, queue, now)
        host_view = host.model_copy(update={"gpus": state.gpus()})
        if hardware is not None:
            host_view = self._cluster_host(host, hardware)
            self._cluster_gpus = host_view.gpus
        policy = self.config.scaling.model_copy(update={"paused": state.intents.paused or self.config.scaling.paused})
        if self.config.fleet.enabled:
            pending = await self._fleet_share(host_view, runners, pending, policy, now)
        observation = Observation(
            host=host_view, runners=runners, jobs=pending, policy=policy, now=now, queue=self._queue_read(queue, full_poll),
            registrations=self._host_registrations(), lifecycle=self._lifecycle(), backoff=self.backoffs.entries(now),
        )  # fmt: skip
        plan = decide(observation)
        if hardware is not None:
            plan = _cluster_reasons(plan, pending, hardware)
        return plan, pending, runners

    def _cluster_host(self, host: Host, hardware: list[NodeHardware]) -> Host:
        """cluster_host(), rebuilt only when the inventory's hardware list (the same object while
        nothing changed) or the agent's host changed."""
        cached = self._cluster_host_cache
        if cached is None or cached[0] is not hardware or cached[1] != host:
            cached = self._cluster_host_cache = (hardware, host, cluster_host(host, hardware))
        return cached[2]

    # --- shutdown ---------------------------------------------------------------------------------------------
    async def drain_for_shutdown(self) -> None:
        """On SIGTERM the agent stops deciding; runners keep running and are adopted by the next
        agent (restarting the agent must not disturb jobs)."""
        self.stop()


def _cluster_reasons(plan: Plan, jobs: list[Job], hardware: list[NodeHardware]) -> Plan:
    """On a cluster, a job that waits for hardware says what no node carries (the host planner's
    wording speaks of QEMU handlers and runners 'here')."""
    if not any(w.reason is WaitReason.NO_MATCHING_HARDWARE for w in plan.waiting):
        return plan
    lacking = {w.job for w in plan.waiting if w.reason is WaitReason.NO_MATCHING_HARDWARE}
    tags = {j.id: frozenset(j.tags) for j in jobs if j.id in lacking}
    reasons: dict[frozenset[str], Unservable | None] = {}  # one per tag set: thousands of jobs share a few
    waiting: list[JobWait] = []
    for wait in plan.waiting:
        why = None
        if wait.reason is WaitReason.NO_MATCHING_HARDWARE and wait.job in tags:
            job_tags = tags[wait.job]
            why = reasons[job_tags] if job_tags in reasons else reasons.setdefault(job_tags, unservable(job_tags, hardware))
        waiting.append(wait.model_copy(update={"detail": why.detail, "missing_tags": list(why.missing_tags)}) if why else wait)
    return plan.model_copy(update={"waiting": waiting})
