"""The runner runtime as an interface: what the reconciler asks of whatever runs runners.

A runtime keeps one *runner instance* per GitLab runner registration (a container, a pod, a VM):
it creates one from a `RunnerSpec`, lists those of this host with their observed status, asks
them to stop gracefully (drain), forcefully (abort) or at once (kill), removes them with what they
left behind, and hands back a runner's token (to delete its registration without a user scope).
It decides nothing: the planner (agent/planner.py) decides from the instances listed here, the
reconciler carries out the plan through these methods. ADR-010 records the contract.

Contract every implementation keeps (tests/unit/test_runtime_contract.py checks the neutral
parts; each implementation's integration tests check the rest):
- Every failure is an agent.errors.AdapterError: Transient (unreachable, try later),
  InvalidConfiguration (names the config key: a mistyped image), NotFound, Conflict,
  PermissionRefused. No library exception escapes; str() is one line and holds no secret.
- The instance carries everything needed to adopt it after an agent restart (labels, annotations):
  the world is the state. Stop and abort requests are recorded with the instance
  (`stop_requested_at`, `abort_requested_at`) so that deadlines survive a restart.
- drain/abort/kill/remove of an instance that is gone succeed (the goal is reached).
- The token is written only where the runner reads it (a 0600 file, a Secret), never into an
  environment, a command line, a label or a log line.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import Field, SecretStr

from ..model import Frozen, Gpu, RunnerKind, RunnerStatus

if TYPE_CHECKING:
    from ..config import AgentConfig

__all__ = ["RunnerInstance", "RunnerRuntime", "RunnerSpec", "RunnerStatus"]


class RunnerSpec(Frozen):
    """One runner to create: the planner's StartRunner plus what the reconciler obtained for it
    (the registration and its token, the URL runners reach GitLab by)."""

    name: str = Field(description="The instance's name, also the runner's id in the planner.")
    gitlab_id: int
    token: SecretStr
    url: str = Field(description="GitLab URL as seen from inside the runner.")
    tags: list[str]
    run_untagged: bool
    kind: RunnerKind
    platform: str
    gpu: Gpu | None = None
    cpus: float
    memory_mb: int
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`); None: instance-wide.")
    clone_url: str | None = Field(None, description="URL job helpers clone from when it is not GitLab's own.")
    ca_pem: str | None = Field(None, description="Private CA of GitLab, handed to the runner beside its config.")


class RunnerInstance(Frozen):
    """One runner as its runtime observes it."""

    name: str
    gitlab_id: int | None = Field(description="Its GitLab registration; None: not recorded (created by hand?).")
    host: str = Field(description="The agent host that owns it.")
    tags: list[str]
    run_untagged: bool
    kind: RunnerKind
    platform: str
    gpus: list[str] = Field(default_factory=list, description="Ids of the GPUs it holds exclusively.")
    reach: str | None = None
    status: RunnerStatus
    status_since: datetime | None = Field(None, description="When it entered `status`, where the runtime says; None: unknown.")
    created_at: datetime | None = None
    started_at: datetime | None = Field(None, description="When its runner process last started; None: never.")
    stop_requested_at: datetime | None = Field(None, description="When a graceful stop (drain) was asked for.")
    abort_requested_at: datetime | None = Field(None, description="When the forceful stop (abort) was sent.")
    jobs: int | None = Field(
        None, description="Job workloads it owns now (job containers, job pods): > 0 proves it busy; None: the runtime cannot tell."
    )

    @property
    def gpu(self) -> str | None:
        """The GPU it holds (a runner holds one at most today)."""
        return self.gpus[0] if self.gpus else None


@runtime_checkable
class RunnerRuntime(Protocol):
    """What runs this host's runners. `runner.runtime` picks the implementation (agent/runtime/__init__.py)."""

    hostname: str

    async def list(self) -> list[RunnerInstance]:
        """Every runner instance of this host, sorted by name. Raises Transient when the runtime cannot be read:
        the reconciler then changes nothing (unknown is never read as absent)."""
        ...

    async def create(self, spec: RunnerSpec) -> RunnerInstance:
        """Create and start one runner; on failure nothing of it is left (no config, no instance)."""
        ...

    async def drain(self, name: str) -> None:
        """Graceful stop: take no new job, exit after the current one. Recorded (stop_requested_at)."""
        ...

    async def abort(self, name: str) -> None:
        """Forceful stop: the runner cancels its job and cleans up within its own shutdown timeout. Recorded."""
        ...

    async def kill(self, name: str) -> None:
        """Immediate end: nothing is cleaned up by the runner itself (remove() does it)."""
        ...

    async def remove(self, name: str) -> None:
        """Remove the instance, whatever its jobs left (containers, volumes, pods) and its stored token."""
        ...

    async def leftovers(self, known: Collection[str]) -> builtins.list[str]:
        """Find and remove what runners not in `known` left behind (stored configs and tokens, job workloads of a
        runner killed before it cleaned up); returns the names removed, for the journal."""
        ...

    def credentials(self, name: str) -> SecretStr | None:
        """The runner's GitLab token while the runtime still has it (None: gone); never logged."""
        ...

    def reconfigure(self, config: AgentConfig) -> None:
        """Take a reloaded configuration (keys that need a restart keep their running values)."""
        ...

    async def close(self) -> None:
        """Release connections (the agent stops or builds another runtime)."""
        ...
