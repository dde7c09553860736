"""Scenario files for `autogit-agent plan`: a whole observation (host, policy, runners, jobs, now)
in one JSON document, so the planner can be run, tested and benchmarked with no I/O."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from .model import Frozen, Host, Job, Policy, Runner, RunnerKind, Tag, UtcDatetime
from .tags import host_profiles, platform_for_arch, arch_of_tag

__all__ = ["Scenario", "ScenarioRunner", "ScenarioError", "load_scenario", "parse_scenario"]


class ScenarioError(ValueError):
    """A scenario that cannot be used; str() is one line naming the field."""


class ScenarioRunner(Frozen):
    """A runner as a scenario gives it: kind, platform and run_untagged may be left out."""

    id: str
    tags: list[Tag] = Field(default_factory=list)
    busy: bool = False
    idle_since: UtcDatetime | None = None
    gpu: str | None = None
    run_untagged: bool | None = None
    kind: RunnerKind | None = None
    platform: str | None = None
    draining: bool = False


class Scenario(Frozen):
    now: UtcDatetime
    host: Host
    policy: Policy = Field(default_factory=Policy)
    runners: list[ScenarioRunner] = Field(default_factory=list)
    jobs: list[Job] = Field(default_factory=list)

    def planner_runners(self) -> list[Runner]:
        """Fill what the scenario left out the way the agent itself would have registered it."""
        native = host_profiles(self.host, self.policy)[0]
        out = []
        for r in self.runners:
            tags = frozenset(r.tags)
            if r.kind is not None:
                kind = r.kind
            elif r.gpu is not None:
                kind = RunnerKind.GPU
            elif tags <= native.tags:
                kind = RunnerKind.NATIVE
            else:
                kind = RunnerKind.EMULATED
            arch = self.host.arch
            if kind is RunnerKind.EMULATED:
                arch = next((a for t in sorted(tags) if (a := arch_of_tag(t)) and a != self.host.arch), arch)
            out.append(
                Runner(
                    id=r.id,
                    tags=r.tags,
                    busy=r.busy,
                    idle_since=r.idle_since,
                    gpu=r.gpu,
                    kind=kind,
                    run_untagged=kind is RunnerKind.NATIVE if r.run_untagged is None else r.run_untagged,
                    platform=r.platform or platform_for_arch(arch),
                    draining=r.draining,
                )
            )
        return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def parse_scenario(text: str | bytes, source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate_json(text)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {_first_error(exc)}") from None


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(path.read_bytes(), str(path))
