"""The whole host as the agent sees it: CPU, emulation and GPUs, and the runner tags it yields."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field

from ..config import AgentConfig
from ..model import Frozen, Gpu, GpuVendor, Host, RunnerKind
from ..tags import host_profiles
from .cpu import CpuInventory, observe_cpu

__all__ = ["DetectReport", "ProfileView", "observe_host", "build_host"]


class ProfileView(Frozen):
    kind: RunnerKind
    arch: str
    gpu: str | None = None
    tags: list[str]
    run_untagged: bool


class DetectReport(Frozen):
    host: Host
    cpu: CpuInventory
    profiles: list[ProfileView] = Field(description="What each kind of runner here could carry.")
    notes: list[str] = Field(default_factory=list)

    def human(self) -> str:
        h, cpu = self.host, self.cpu
        lines = [
            f"host      {h.hostname}",
            f"arch      {h.arch} (uname -m: {cpu.machine})",
            f"cpus      {h.cpus}",
            f"memory    {h.memory_mb} MiB",
            f"emulated  {', '.join(h.emulated) or '-'}",
        ]
        for e in cpu.binfmt:
            if e.arch and e.arch != h.arch:
                state = "enabled" if e.enabled else "disabled"
                usable = "usable in containers" if e.enabled and e.fix_binary else "NOT usable in containers (no F flag)" if e.enabled else "off"
                lines.append(f"  binfmt  {e.name:<14} {e.arch:<8} {state}, flags {e.flags or '-'}: {usable}")
        lines.append(f"gpus      {len(h.gpus) or '-'}")
        lines += [_gpu_line(g) for g in h.gpus]
        lines.append("runner profiles (the tags each kind of runner could carry):")
        for p in self.profiles:
            what = p.kind.value + (f" {p.gpu}" if p.gpu else f" {p.arch}" if p.kind is RunnerKind.EMULATED else "")
            lines.append(f"  {what:<28} tags: {', '.join(p.tags)}{'  (+ untagged jobs)' if p.run_untagged else ''}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _gpu_line(g: Gpu) -> str:
    health = "healthy" if g.healthy else "UNHEALTHY"
    facts = [f"{g.memory_mb} MiB"]
    facts += [f"compute capability {g.compute_capability}"] if g.compute_capability else []
    facts += [g.gfx_target] if g.gfx_target else []
    facts += ["MIG mode: only its instances take jobs"] if g.mig_mode else []
    facts += [f"MIG {g.mig_profile or 'instance'} of {g.mig_parent}"] if g.mig_parent else []
    return f"  {g.id}  {g.vendor.value} {g.model}, {', '.join(facts)}, {health}{', drained' if g.drained else ''}"


def build_host(config: AgentConfig, cpu: CpuInventory, gpus: list[Gpu], hostname: str | None = None) -> Host:
    return Host(
        hostname=config.hostname or hostname or socket.gethostname(),
        arch=cpu.arch,
        emulated=cpu.emulated,
        cpus=cpu.cpus,
        memory_mb=cpu.memory_mb,
        gpus=[g for g in gpus if g.id not in set(config.gpu.ignore)],
    )


def observe_host(config: AgentConfig, root: Path = Path("/"), gpus: list[Gpu] | None = None) -> DetectReport:
    cpu = observe_cpu(root)
    notes = []
    if gpus is None:
        from .gpu import observe_gpus

        gpus = [snap.gpu for snap in observe_gpus(sys_root=root, vendors=[GpuVendor(v) for v in config.gpu.vendors])]
    host = build_host(config, cpu, gpus)
    for e in cpu.binfmt:
        if e.enabled and e.arch and e.arch != cpu.arch and not e.fix_binary:
            notes.append(f"{e.name} lacks the F flag: containers cannot use it (re-register with F, e.g. tonistiigi/binfmt)")
    profiles = [
        ProfileView(kind=p.kind, arch=p.arch, gpu=p.gpu, tags=sorted(p.tags), run_untagged=p.kind is RunnerKind.NATIVE)
        for p in host_profiles(host, config.scaling)
    ]
    return DetectReport(host=host, cpu=cpu, profiles=profiles, notes=notes)
