"""AgentState -> wire models. Pure functions of one state snapshot: no I/O, easy to test.

The state holds the agent's strict internal models; the wire models are built from them by
attribute (schema.Wire has from_attributes), so the server never sends an internal model."""

from __future__ import annotations

from datetime import datetime

from collections import Counter

from ..state import AgentState
from .schema import (
    FleetHost,
    FleetResponse,
    FleetRunner,
    Counts,
    GpusResponse,
    GpuView,
    JobsResponse,
    JobStatus,
    JobView,
    PlanResponse,
    RunnersResponse,
    StatusResponse,
)

__all__ = ["gpus_view", "jobs_view", "plan_view", "runners_view", "status_view"]


def gpus_view(state: AgentState) -> GpusResponse:
    holders = {rv.runner.gpu: rv for rv in state.runners if rv.runner.gpu}
    views = []
    for gpu in state.gpus():
        holder = holders.get(gpu.id)
        views.append(
            GpuView(
                gpu=gpu,
                reading=state.gpu_readings.get(gpu.id),
                held_by_runner=holder.runner.id if holder else None,
                held_by_job=holder.job if holder else None,
                operator_drained=gpu.id in state.intents.drained_gpus,
            )
        )
    return GpusResponse(gpus=views)


def runners_view(state: AgentState) -> RunnersResponse:
    return RunnersResponse(runners=list(state.runners))


def jobs_view(state: AgentState) -> JobsResponse:
    running = {rv.job: rv.runner.id for rv in state.runners if rv.job is not None}
    served = {s.job: s.runner for s in state.plan.served} if state.plan else {}
    waits = {w.job: w for w in state.plan.waiting} if state.plan else {}
    views = []
    for job in state.jobs:
        if job.id in running:
            views.append(JobView(job=job, status=JobStatus.RUNNING, runner=running[job.id]))
        elif job.id in served:
            views.append(JobView(job=job, status=JobStatus.SERVED, runner=served[job.id]))
        elif job.id in waits:
            views.append(JobView(job=job, status=JobStatus.WAITING, wait=waits[job.id]))
        else:
            views.append(JobView(job=job, status=JobStatus.UNPLANNED))
    return JobsResponse(jobs=views, plan_time=state.plan_time)


def fleet_view(state: AgentState, hostname: str) -> FleetResponse:
    own = [
        FleetRunner(
            id=rv.runner.id, gitlab_id=rv.gitlab_id, state=rv.state, tags=rv.runner.tags, platform=rv.runner.platform,
            gpu=rv.runner.gpu, job=rv.job, started_at=rv.started_at,
        )
        for rv in state.runners
    ]
    others: dict[str, list[FleetRunner]] = {}
    for reg in state.fleet:
        others.setdefault(reg.host, []).append(FleetRunner(id=reg.name, gitlab_id=reg.id, state=reg.status or "unknown", tags=reg.tags))
    presences = {p.hostname: p for p in state.presences}
    owns: dict[str, list[int]] = {}
    for o in state.ownership:
        if o.owner is not None:
            owns.setdefault(o.owner, []).append(o.job)

    def host_view(host: str, last_seen: datetime | None, runners: list[FleetRunner]) -> FleetHost:
        p = presences.get(host)
        if p is None:
            return FleetHost(hostname=host, last_seen=last_seen, runners=runners, owns=sorted(owns.get(host, [])))
        profiles = [p.arch] + [f"{a} (emulated)" for a in p.emulated] + [f"{g.count}× {' '.join(sorted(g.tags))}" for g in p.gpus] + list(p.extra_tags)
        return FleetHost(hostname=host, last_seen=last_seen, runners=runners, live=host in state.live_hosts, heartbeat_at=p.heartbeat_at,
                         joined_at=p.joined_at, profiles=profiles, room=p.room.slots, owns=sorted(owns.get(host, [])))  # fmt: skip

    hosts = [host_view(hostname, state.plan_time, own)]
    for host in sorted(set(others) | set(presences) - {hostname}):
        hosts.append(host_view(host, state.fleet_seen, sorted(others.get(host, []), key=lambda r: r.id)))
    return FleetResponse(hosts=hosts, ownership=[o.describe() for o in state.ownership if not o.mine])


def plan_view(state: AgentState) -> PlanResponse:
    return PlanResponse(plan=state.plan, plan_time=state.plan_time, reconcile_count=state.reconcile_count)


def status_view(state: AgentState, hostname: str) -> StatusResponse:
    return StatusResponse(
        hostname=state.host.hostname if state.host else hostname,
        host=state.host,
        phase=state.phase,
        gitlab=state.gitlab,
        docker=state.docker,
        counts=_counts(state),
        paused=state.intents.paused,
        started_at=state.started_at,
        last_reconcile=state.plan_time,
        reconcile_count=state.reconcile_count,
        last_event_seq=state.bus.last_seq,
        config=state.config,
        leadership=state.leadership,
        cluster=state.cluster,
    )


def _counts(state: AgentState) -> Counts:
    gpus = state.gpus()
    held = {rv.runner.gpu for rv in state.runners if rv.runner.gpu}
    running = {rv.job for rv in state.runners if rv.job is not None}
    served = {s.job for s in state.plan.served} if state.plan else set()
    waits = {w.job for w in state.plan.waiting} if state.plan else set()
    waiting = sum(1 for job in state.jobs if job.id in waits and job.id not in running and job.id not in served)
    counts = Counts(
        runners=dict(sorted(Counter(rv.state for rv in state.runners).items())),
        runners_total=len(state.runners),
        pending_jobs=len(state.jobs),
        waiting_jobs=waiting,
        gpus=len(gpus),
        gpus_busy=sum(1 for g in gpus if g.id in held),
        gpus_drained=sum(1 for g in gpus if g.drained),
        gpus_unhealthy=sum(1 for g in gpus if not g.healthy),
    )
    return counts
