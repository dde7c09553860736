"""Observe: the planner's Observation from the runtime's instances, GitLab's queue and listing,
the operator's intents and the running backoffs. Records facts only; decides nothing."""

from __future__ import annotations

from datetime import datetime

from ..gitlab.adapter import QueueSnapshot, Registration
from ..model import BusyEvidence, HostRegistration, Job, Lifecycle, QueueRead, RegistrationState, Runner
from ..runtime.base import RunnerInstance
from ..runtime.runner_config import KILL_GRACE_S, forceful_timeout_s
from .core import ReconcilerCore

__all__ = ["ObserveStep"]


def registration_state(reg: Registration) -> RegistrationState:
    return RegistrationState(id=reg.id, paused=reg.paused, online=reg.online, contacted_at=reg.contacted_at, status=reg.status)


class ObserveStep(ReconcilerCore):
    async def _observe_gitlab(self, full_poll: bool, now: datetime) -> QueueSnapshot:
        """The queue (every full poll) and the registration listing; raises GitLabError when GitLab
        cannot be read at all (the pass then changes nothing)."""
        assert self.gitlab is not None
        state = self.state
        queue = self._queue
        if full_poll or queue is None:
            queue = await self.gitlab.observe_queue()
            self._queue, self._queue_at = queue, self.monotonic()
            self._hints.clear()
            self._gone.clear()
        if full_poll or self._registrations is None:
            every = await self.gitlab.fill_tags(await self.gitlab.list_registrations())
            self._listing = every
            self._registrations = [r for r in every if r.host == self.hostname]
            state.fleet = [r for r in every if r.host != self.hostname]
            self._busy_ids = {r.runner_id for r in queue.running if r.runner_id is not None}
            state.fleet_seen = now
        return queue

    def _pending(self, queue: QueueSnapshot) -> list[Job]:
        """The polled pending jobs, merged with what webhooks said since; first-seen times kept."""
        pending = [j for j in queue.pending if j.id not in self._gone]
        known = {j.id for j in pending}
        pending += [j for j in self._hints.values() if j.id not in known]
        mono = self.monotonic()
        for job in pending:
            self._first_seen.setdefault(job.id, mono)
        pending_ids = {j.id for j in pending}
        for job_id in list(self._first_seen):
            if job_id not in pending_ids:
                del self._first_seen[job_id]
        return pending

    async def _count_missing(self, instances: list[RunnerInstance]) -> None:
        """For each runner the listing does not show, ask GitLab whether its registration exists: a
        listing proves nothing (an admin who is a member of nothing, offset pagination while others
        create runners); `GET /runners/:id` → 404 counts one strike (the planner removes on two)."""
        assert self.gitlab is not None
        listed = {r.id for r in self._registrations or []}
        names = {i.name for i in instances}
        for name in list(self._missing):
            if name not in names:
                del self._missing[name]
        for instance in instances:
            if instance.gitlab_id is None or instance.gitlab_id in listed:
                self._missing.pop(instance.name, None)
                continue
            exists = await self.gitlab.runner_exists(instance.gitlab_id)
            if exists is False:
                self._missing[instance.name] = self._missing.get(instance.name, 0) + 1
            else:
                self._missing.pop(instance.name, None)

    def _runners(self, instances: list[RunnerInstance], queue: QueueSnapshot, now: datetime) -> list[Runner]:
        """The runners as the planner reads them, with how their busy state is known."""
        busy_ids = {r.runner_id for r in queue.running if r.runner_id is not None}
        registrations = {r.id: r for r in self._registrations or []}
        drained = self.state.intents.drained_runners
        out = []
        for c in instances:
            by_gitlab = c.gitlab_id in busy_ids
            by_jobs = bool(c.jobs)
            busy = by_gitlab or by_jobs
            if busy:
                self._last_busy[c.name] = now
            floor = [t for t in (c.started_at, self._last_busy.get(c.name), self.started_at) if t is not None]
            reg = registrations.get(c.gitlab_id) if c.gitlab_id is not None else None
            out.append(
                Runner(
                    id=c.name,
                    tags=c.tags,
                    run_untagged=c.run_untagged,
                    kind=c.kind,
                    platform=c.platform,
                    gpu=c.gpu,
                    reach=c.reach,
                    busy=busy,
                    busy_by=BusyEvidence.GITLAB if by_gitlab else BusyEvidence.LOCAL if by_jobs else None,
                    idle_since=None if busy else max(floor),
                    status=c.status,
                    status_since=c.status_since,
                    started_at=c.started_at,
                    stop_requested_at=c.stop_requested_at,
                    abort_requested_at=c.abort_requested_at,
                    gitlab_id=c.gitlab_id,
                    registration=registration_state(reg) if reg is not None else None,
                    missing_strikes=self._missing.get(c.name, 0),
                    operator_drain=c.name in drained,
                )
            )
        return out

    def _queue_read(self, queue: QueueSnapshot, full_poll: bool) -> QueueRead:
        return QueueRead(complete=not queue.unread, unread=queue.unread, fresh=full_poll)

    def _host_registrations(self) -> list[HostRegistration]:
        return [HostRegistration(id=r.id, name=r.name, registration=registration_state(r)) for r in self._registrations or []]

    def _lifecycle(self) -> Lifecycle:
        runner = self.config.runner
        # The runner's own forceful timeout, not the key: run-single always takes 30 s (runner_config.forceful_timeout_s).
        return Lifecycle(drain_timeout=runner.drain_timeout, force_timeout=forceful_timeout_s(runner), kill_grace=KILL_GRACE_S)

