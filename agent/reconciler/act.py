"""Act: carry out the planner's decisions through the runtime and GitLab, and publish what happened.

The order keeps every cap true at every instant and no job lands on a leaving runner: removals,
kills and aborts first, then pause-then-stop, deletes of stray registrations, leftovers, and
the starts last. A failure is recorded (event, journal, status, backoff) and never stops the
rest of the plan: the other runners, registrations and jobs are still served.
"""

from __future__ import annotations

import asyncio
import uuid

from pydantic import SecretStr

from ..errors import AdapterError, InvalidConfiguration
from ..gitlab.adapter import GitLabError, Registration, description_prefix
from ..metrics import start_failure_cause
from ..model import Job, Plan, Runner, StartRunner
from ..planner import REASON_NEVER_CONTACTED
from ..runtime.base import RunnerInstance, RunnerSpec, RunnerStatus
from ..state import RunnerView
from .core import ReconcilerCore
from .passlog import log

__all__ = ["ActStep"]


class ActStep(ReconcilerCore):
    async def _act(self, plan: Plan, known: set[str]) -> None:
        """`known`: the names of the runners this pass observed (what is stored for any other is a leftover).
        Each action first asks `may_act` (leader election): a replica that lost the Lease mid-plan
        stops there, before the next one can start acting."""
        bus = self.state.bus
        for removal in plan.remove:
            if not self.may_act():
                return
            await self._remove(removal.runner, removal.gitlab_id, removal.reason)
        for kill in plan.kill:
            if not self.may_act():
                return
            await self._signal("kill", kill.runner, "runner.killed", f"runner {kill.runner} {kill.reason}; killed")
        for abort in plan.abort:
            if not self.may_act():
                return
            await self._signal("abort", abort.runner, "runner.aborting", f"runner {abort.runner} {abort.reason}; aborting it")
        for pause in plan.pause:
            if not self.may_act():
                return
            await self._pause(pause.gitlab_id)
        for stop in plan.stop:
            if self.may_act() and await self._signal("drain", stop.runner, None, ""):
                bus.publish("runner.stopping", f"runner {stop.runner} stopping ({stop.reason})", runner=stop.runner, reason=stop.reason)
        for drain in plan.drain:
            if self.may_act() and await self._signal("drain", drain.runner, None, ""):
                bus.publish("runner.draining", f"runner {drain.runner} draining ({drain.reason}): no new job, current one finishes",
                            runner=drain.runner, reason=drain.reason)  # fmt: skip
        self._note_never_contacted(plan)
        for delete in plan.delete_registrations:
            if not self.may_act():
                return
            await self._delete_registration(delete.gitlab_id, delete.reason)
        if not self.may_act():
            return
        await self._leftovers(known)
        if plan.start:
            await self._start_all(plan.start)

    async def _signal(self, verb: str, name: str, event: str | None, message: str) -> bool:
        """drain / abort / kill one runner; a runtime failure is reported and the rest goes on."""
        action = {"drain": self.runtime.drain, "abort": self.runtime.abort, "kill": self.runtime.kill}[verb]
        try:
            with self._timed("stop" if verb == "drain" else verb):
                await action(name)
        except AdapterError as exc:
            log.warning("%s of runner %s failed: %s", verb, name, exc)
            self.state.bus.publish("runner.action-failed", f"could not {verb} runner {name}: {exc}", runner=name, action=verb)
            return False
        if event is not None:
            self.state.bus.publish(event, message, runner=name)
        return True

    async def _leftovers(self, known: set[str]) -> None:
        """What runners gone without the agent left (a stored config and token, job containers of
        a killed runner): removed, and said once in the journal."""
        try:
            removed = await self.runtime.leftovers(known)
        except AdapterError as exc:
            log.warning("removing leftovers failed: %s", exc)
            return
        if removed:
            log.info("removed what gone runners left: %s", ", ".join(removed))

    def _note_never_contacted(self, plan: Plan) -> None:
        """A runner replaced because it never contacted GitLab says why in status until it is gone."""
        present = {s.runner for s in plan.stop} | {h.runner for h in plan.held}
        for key in [k for k in self._refused if k.startswith("contact ") and k[8:] not in present]:
            del self._refused[key]
        bound = self.config.scaling.pickup_timeout
        for stop in plan.stop:
            if stop.reason == REASON_NEVER_CONTACTED:
                self._refused[f"contact {stop.runner}"] = (
                    f"runner {stop.runner} has not contacted GitLab {bound:.0f} s after it started: check runner.gitlab_url, "
                    "gitlab.ca_file and runner.network (the runner's logs say why); it is replaced"
                )

    async def _remove(self, name: str, gitlab_id: int | None, why: str) -> None:
        token = self.runtime.credentials(name)  # deleting with it needs no user scope or role
        try:
            with self._timed("remove"):
                await self.runtime.remove(name)
        except AdapterError as exc:
            log.warning("removing runner %s failed: %s", name, exc)
            self.state.bus.publish("runner.action-failed", f"could not remove runner {name}: {exc}", runner=name, action="remove")
            return
        self._last_busy.pop(name, None)
        self._missing.pop(name, None)
        self.state.bus.publish("runner.removed", f"runner {name} removed: {why}", runner=name, gitlab_id=gitlab_id)
        if gitlab_id is not None:
            await self._delete_registration(gitlab_id, f"runner {name} removed", token)

    async def _delete_registration(self, gitlab_id: int, why: str, token: SecretStr | None = None) -> None:
        """Delete it; a refusal backs off (the planner asks again only after it), and never stops the pass."""
        assert self.gitlab is not None
        key = str(gitlab_id)
        try:
            await self.gitlab.delete_runner(gitlab_id, token)
        except GitLabError as exc:
            delay = self.backoffs.failed("delete-registration", key, str(exc))
            self.state.bus.publish("registration.delete-failed", f"GitLab runner {gitlab_id}: {exc}; next try in {delay:.0f}s",
                                   gitlab_id=gitlab_id, permission=exc.permission)  # fmt: skip
            if exc.permission:
                self._refused[f"delete {gitlab_id}"] = str(exc)
            return
        self.backoffs.succeeded("delete-registration", key)
        self._refused.pop(f"delete {gitlab_id}", None)
        if self._registrations is not None:
            self._registrations = [r for r in self._registrations if r.id != gitlab_id]
        self._listing = [r for r in self._listing if r.id != gitlab_id]
        self.state.bus.publish("registration.deleted", f"GitLab runner {gitlab_id} deleted: {why}", gitlab_id=gitlab_id)

    async def _pause(self, gitlab_id: int) -> None:
        """paused=true in GitLab before the graceful stop; a GitLab that refuses (no manage_runner or
        api scope) only loses that nicety, and is asked again only after the backoff."""
        assert self.gitlab is not None
        try:
            await self.gitlab.set_paused(gitlab_id)
            self._refused.pop("pause", None)
        except GitLabError as exc:
            if exc.permission:
                self.backoffs.failed("pause", "*", str(exc), at_least=self.BACKOFF_MAX_S)
                line = str(exc).replace(f"/runners/{gitlab_id}", "/runners/:id")
                self._refused["pause"] = f"{line} (runners are stopped without being paused first)"

    # --- starts ---------------------------------------------------------------------------------------
    async def _start_all(self, starts: list[StartRunner]) -> None:
        """Starts are independent (registration + runner each): a burst of jobs gets its runners in
        parallel, a few at a time so GitLab and the runtime are not flooded."""
        gate = asyncio.Semaphore(self.START_CONCURRENCY)

        async def start_one(start: StartRunner) -> None:
            async with gate:
                if not self.may_act():
                    return  # the Lease was lost while earlier starts ran
                if self.backoffs.active("start", start.kind.value):
                    return  # failed meanwhile: the others wait for the backoff too
                try:
                    with self._timed("start"):
                        await self._start(start)
                except AdapterError as exc:
                    self._start_failed(start, exc)
                    return
                self.backoffs.succeeded("start", start.kind.value)
                self.backoffs.succeeded("start", "*")
                self._refused.pop("create", None)
                self._runtime_problems.pop(f"start {start.kind.value}", None)

        await asyncio.gather(*(start_one(s) for s in starts))

    def _start_failed(self, start: StartRunner, exc: AdapterError) -> None:
        """One line, in the event, the journal and status; a backoff so the next pass does not create
        and delete a registration again (GitLab's refusal holds every start, a runtime failure its kind)."""
        target = "*" if isinstance(exc, GitLabError) else start.kind.value
        delay = self.backoffs.failed("start", target, str(exc))
        where = f" (check {exc.field})" if isinstance(exc, InvalidConfiguration) else ""
        cause = f"could not start a {start.kind.value} runner: {exc}{where}"
        line = f"{cause}; next try in {delay:.0f}s"
        log.warning("%s", line)
        self.state.bus.publish("runner.start-failed", line, tags=start.tags, kind=start.kind.value, retry_in_s=round(delay),
                               cause=start_failure_cause(exc))  # fmt: skip
        if isinstance(exc, GitLabError):
            if exc.permission:
                self._refused["create"] = str(exc)
        else:
            self._runtime_problems[f"start {start.kind.value}"] = cause  # the same line every retry: one status event

    async def _start(self, start: StartRunner) -> None:
        assert self.gitlab is not None
        name = f"autogit-{self.hostname}-{start.kind.value}-{uuid.uuid4().hex[:10]}"
        description = f"{description_prefix(self.hostname)}{name}"
        t0 = self.monotonic()
        # GitLab ends a job at the runner's maximum_timeout: no job may outlive the drain deadline.
        created = await self.gitlab.create_runner(description, start.tags, start.run_untagged, reach=start.reach,
                                                  maximum_timeout=int(self.config.runner.drain_timeout))  # fmt: skip
        registration = Registration(id=created.id, description=description, tags=start.tags, run_untagged=start.run_untagged, reach=start.reach)
        if self._registrations is not None:
            self._registrations.append(registration)
        self._listing.append(registration)
        gpus = self._cluster_gpus if self._cluster_gpus is not None else self.state.gpus()
        gpu = next((g for g in gpus if g.id == start.gpu), None) if start.gpu else None
        own_url = self.config.runner.gitlab_url
        url = str(own_url or self.config.gitlab.url).rstrip("/")
        try:
            spec = RunnerSpec(
                name=name, gitlab_id=created.id, token=created.token, url=url, tags=start.tags, run_untagged=start.run_untagged,
                kind=start.kind, platform=start.platform, gpu=gpu, reach=start.reach, cpus=start.cpus, memory_mb=start.memory_mb,
                # GitLab's repo_url names its external URL; runners that reach it by another one
                # must clone from that one too (gitlab-runner common/build_url_helper.go).
                clone_url=url if own_url else None, ca_pem=self._ca_pem(),
            )  # fmt: skip
            await self.runtime.create(spec)
        except BaseException:
            # No runner, no registration: never leave a registration behind.
            await self._delete_registration(created.id, "its runner could not be created", created.token)
            raise
        waited = [self.monotonic() - self._first_seen[j] for j in start.for_jobs if j in self._first_seen]
        self.state.bus.publish(
            "runner.started",
            f"runner {name} started ({start.kind.value}, {start.platform}, tags [{', '.join(start.tags)}]"
            + (f", GPU {start.gpu}" if start.gpu else "")
            + (f") for jobs {start.for_jobs}" if start.for_jobs else ") for the warm pool"),
            runner=name, gitlab_id=created.id, kind=start.kind.value, tags=start.tags, platform=start.platform, gpu=start.gpu,
            for_jobs=start.for_jobs, start_seconds=round(self.monotonic() - t0, 3),
            scale_up_seconds=round(max(waited), 3) if waited else None,
        )  # fmt: skip

    def _ca_pem(self) -> str | None:
        path = self.config.gitlab.ca_file
        if path is None:
            return None
        try:
            return path.read_text()
        except OSError as exc:
            raise InvalidConfiguration(f"gitlab.ca_file: cannot read {path}: {exc.strerror}", field="gitlab.ca_file") from None

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

    def _publish_state(self, instances: list[RunnerInstance], runners: list[Runner], job_of: dict[int, int] | None) -> None:
        by_name = {r.id: r for r in runners}
        views = []
        for c in instances:
            runner = by_name.get(c.name) or Runner(
                id=c.name, tags=c.tags, run_untagged=c.run_untagged, kind=c.kind, platform=c.platform, gpu=c.gpu
            )
            job = (job_of or {}).get(c.gitlab_id) if c.gitlab_id is not None else None
            if c.stop_requested_at is not None:
                view_state = "stopping" if job is None else "draining"
            elif job is not None:
                view_state = "busy"
            elif c.status is RunnerStatus.RUNNING:
                view_state = "idle"
            else:
                view_state = "starting"
            views.append(RunnerView(runner=runner, container=c.name, gitlab_id=c.gitlab_id, state=view_state, job=job, started_at=c.started_at))
        self.state.runners = views
