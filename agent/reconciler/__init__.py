"""The reconcile loop: observe (queue, runners, registrations) → decide (the planner) → act → publish.

Level-triggered, like a Kubernetes controller: every pass reads the world again and the planner
computes the desired state from it, so a lost webhook, a duplicate event or a crash of the agent
itself cannot leave anything behind. The only memory kept between passes is a cache (the last
queue snapshot between full polls, when each runner was last seen busy, how often GitLab said a
registration is gone, the backoffs) that a restart may lose without harm: idle runners are then
kept a little longer, never reaped early.

Split by job: `observe.py` builds the planner's Observation, `act.py` carries the plan out through
the runtime (agent/runtime/base.py) and GitLab, `fleet.py` keeps this host's place in the fleet,
`loop.py` runs passes. None of them chooses: every decision is the planner's (ADR-001).

Safety rules (docs/runners/restart-safety.md):
- If GitLab or the runtime cannot be observed, nothing is started or stopped: what runs keeps
  running, the fault is reported, and the next pass tries again.
- A runner is stopped gracefully (no new job, exit after the current one); one still running
  `runner.drain_timeout` later is aborted, and only one that survives `runner.force_timeout`
  more is killed. Whatever a runner leaves of its jobs is removed with it.
- Leaks are cleaned from observation alone: registrations of this host with no runner, runners
  with no registration, exited runners, stored configs with no runner.
"""

from .loop import Reconciler

__all__ = ["Reconciler"]
