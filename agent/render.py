"""Human-readable text for plans (the CLI's default output)."""

from __future__ import annotations

from .model import Plan
from .scenario import Scenario

__all__ = ["plan_text"]


def plan_text(scenario: Scenario, plan: Plan) -> str:
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
    for w in plan.waiting:
        tags = jobs[w.job].tags if w.job in jobs else []
        lines.append(f"  wait   job {w.job} [{', '.join(tags)}]  {w.reason.value}: {w.detail}")
    return "\n".join(lines)
