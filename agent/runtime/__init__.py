"""Runner runtimes: the Protocol (base.py) and its implementations, picked by `runner.runtime`.

A runtime registers a factory here under its name; the daemon builds whichever the config names.
A second runtime (Kubernetes) adds one entry and touches neither the planner nor the reconciler
(ADR-010)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import RunnerInstance, RunnerRuntime, RunnerSpec, RunnerStatus

if TYPE_CHECKING:
    from ..config import AgentConfig
    from ..model import Host

__all__ = ["RunnerInstance", "RunnerRuntime", "RunnerSpec", "RunnerStatus", "build_runtime", "register_runtime", "runtime_names"]

RuntimeFactory = Callable[["AgentConfig", str, "Host"], RunnerRuntime]
_FACTORIES: dict[str, RuntimeFactory] = {}


def register_runtime(name: str, factory: RuntimeFactory) -> None:
    """Make `runner.runtime: <name>` build runtimes with `factory(config, hostname, host)`."""
    _FACTORIES[name] = factory


def runtime_names() -> list[str]:
    _load_builtin()
    return sorted(_FACTORIES)


def build_runtime(config: AgentConfig, hostname: str, host: Host) -> RunnerRuntime:
    """The runtime `config.runner.runtime` names, for this host."""
    _load_builtin()
    name = config.runner.runtime
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"runner.runtime: unknown runtime {name!r} (known: {', '.join(sorted(_FACTORIES))})")
    return factory(config, hostname, host)


def _load_builtin() -> None:
    # Imported lazily: the planner, scenarios and the TUI never pull in the Docker library.
    if "docker" not in _FACTORIES:
        from .docker import docker_runtime

        register_runtime("docker", docker_runtime)
    if "kubernetes" not in _FACTORIES:
        from .k8s_runtime import kubernetes_runtime

        register_runtime("kubernetes", kubernetes_runtime)
