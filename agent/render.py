"""Human-readable text for plans (the CLI's default output)."""

from __future__ import annotations

from .model import Plan
from .scenario import FleetHost, FleetReport, Scenario

__all__ = ["fleet_text", "plan_text"]


def plan_text(scenario: Scenario, plan: Plan, fleet: FleetReport | None = None) -> str:
    jobs = {j.id: j for j in scenario.jobs}
    lines = [f"plan at {scenario.now.isoformat()} for {scenario.host.hostname} ({scenario.host.arch}): "
             f"{len(plan.start)} start, {len(plan.stop)} stop, {len(plan.drain)} drain, "
             f"{len(plan.served)} served, {len(plan.waiting)} waiting"]
    for i, s in enumerate(plan.start):
        gpu = f" gpu={s.gpu}" if s.gpu else ""
        jobs_for = ", ".join(map(str, s.for_jobs)) or "warm pool"
        lines.append(f"  start  #{i} {s.kind.value:<8} {s.platform:<14} tags=[{', '.join(s.tags)}]{gpu}"
                     f"{' +untagged' if s.run_untagged else ''}  for {jobs_for}")
    for stop in plan.stop:
        lines.append(f"  stop   {stop.runner}  ({stop.reason})")
    for d in plan.drain:
        lines.append(f"  drain  {d.runner}  ({d.reason})")
    lines += [f"  remove {r.runner}  ({r.reason})" for r in plan.remove]
    lines += [f"  abort  {a.runner}  ({a.reason})" for a in plan.abort]
    lines += [f"  kill   {k.runner}  ({k.reason})" for k in plan.kill]
    lines += [f"  pause  {p.runner}  (registration {p.gitlab_id}, before it stops)" for p in plan.pause]
    lines += [f"  delete registration {d.gitlab_id}  ({d.reason})" for d in plan.delete_registrations]
    for h in plan.held:
        until = f" until {h.until.isoformat()}" if h.until else ""
        lines.append(f"  hold   {h.runner}  {h.reason}{until}{': ' + h.detail if h.detail else ''}")
    for w in plan.waiting:
        tags = jobs[w.job].tags if w.job in jobs else []
        lines.append(f"  wait   job {w.job} [{', '.join(tags)}]  {w.reason.value}: {w.detail}")
    if fleet is not None:
        lines += fleet_text(scenario, fleet)
    return "\n".join(lines)


def _host_line(h: FleetHost, ttl: float) -> str:
    name = f"{h.hostname} (this host)" if h.this_host else h.hostname
    if not h.live:
        when = f"{h.heartbeat_age_s:.0f} s ago" if h.heartbeat_age_s >= 0 else f"{-h.heartbeat_age_s:.0f} s ahead"
        return f"  host   {name}  dead: heartbeat {when}, past membership_ttl {ttl:g} s; its runners and room do not count"
    heartbeat = "" if h.this_host else f", heartbeat {h.heartbeat_age_s:.0f} s ago"
    return f"  host   {name}  live{heartbeat}; owns {', '.join(map(str, h.owns)) or 'no job'}"


def fleet_text(scenario: Scenario, fleet: FleetReport) -> list[str]:
    """The fleet block of `plan`: each host's liveness, then each pending job's ownership line
    (JobOwnership.describe(), the agent's status wording)."""
    tags = {j.id: j.tags for j in scenario.jobs}
    lines = [f"fleet: {fleet.hostname} plans for {len(fleet.planned)} of {len(scenario.jobs)} pending jobs "
             f"(hold_off {fleet.hold_off:g} s, membership_ttl {fleet.membership_ttl:g} s)"]  # fmt: skip
    if not fleet.member:
        lines.append("  this host is not a live member: it plans alone, for every job")
    lines += [_host_line(h, fleet.membership_ttl) for h in fleet.hosts]
    lines += [f"  {o.describe()}  [{', '.join(tags.get(o.job, []))}]" for o in fleet.ownership]
    return lines
