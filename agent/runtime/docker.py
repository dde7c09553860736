"""Runner containers on the Docker engine: create, list by label, drain gracefully, remove.

One container per runner. Its GitLab token lives only in its config.toml (0600, in a directory
mounted read-only at /etc/gitlab-runner): never in the container's environment, its command
line or the agent's logs. The container's labels carry everything the agent needs to adopt it
after a restart (ARCHITECTURE: "the world is the state"); a `stopping` marker file beside the
config records that a graceful stop was asked for, so that too survives an agent restart.

With the docker executor the job runs in a sibling container that gitlab-runner creates, so
resource limits, GPUs and devices for jobs go into config.toml's [runners.docker] table.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Collection
import grp
import os
import shutil
import tomllib
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.types
import requests
import tomli_w
from pydantic import SecretStr

from ..config import AgentConfig, RunnerConfig, RunnerMode
from ..digits import parse_uint
from ..errors import AdapterError, Conflict, InvalidConfiguration, NotFound, Transient
from ..model import Gpu, GpuVendor, Host, RunnerKind
from .base import RunnerInstance, RunnerSpec, RunnerStatus
from .runner_config import JOB_OF_LABEL, platform_check_script, render_config, short_tokens

__all__ = [
    "DockerError", "DockerRuntime", "ManagedContainer", "RunnerSpec", "LABEL", "JOB_OF_LABEL", "docker_runtime", "nvidia_cdi_specs",
    "platform_check_script", "short_tokens", "use_cdi",
]  # fmt: skip

LABEL = "io.autogit"
MANAGED_BY = "autogit-agent"
# gitlab-runner labels every container, volume and network it creates for a job with this
# prefix, and `.runner.id` with its ShortenToken(token) (executors/docker/internal/labels), whose
# form depends on the runner's version (runner_config.short_tokens).
GITLAB_RUNNER_LABEL = "com.gitlab.gitlab-runner"
_CONFIG_MOUNT = "/etc/gitlab-runner"
# The host's Docker socket, mounted into docker-executor runners only (_volumes).
DOCKER_SOCKET = "/var/run/docker.sock"


def nvidia_cdi_specs(spec_dirs: list[str]) -> bool:
    """Whether any CDI spec in these directories (dockerd's `CDISpecDirs`) names NVIDIA GPUs."""
    for directory in spec_dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".yaml", ".yml", ".json")):
                continue
            try:
                if "nvidia.com/gpu" in Path(directory, name).read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False


def use_cdi(mode: str, spec_dirs: list[str]) -> bool:
    """gpu.cdi: always, never, or auto (CDI when dockerd has CDI on and NVIDIA specs exist)."""
    return mode == "always" or (mode == "auto" and nvidia_cdi_specs(spec_dirs))


class DockerError(Transient):
    """The Docker engine could not be reached or failed (a Transient of agent/errors.py)."""


# The neutral instance type is what this runtime lists (ADR-010); the old name stays for callers.
ManagedContainer = RunnerInstance

# Docker's State.Status → the neutral status. Anything else is UNKNOWN, never read as exited.
_STATUS = {
    "created": RunnerStatus.CREATING,
    "restarting": RunnerStatus.CREATING,
    "running": RunnerStatus.RUNNING,
    "paused": RunnerStatus.RUNNING,
    "exited": RunnerStatus.EXITED,
    "dead": RunnerStatus.EXITED,
    "removing": RunnerStatus.GONE,
}


def _docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 times with nanoseconds; its zero time (0001-…) means never."""
    if not value or value.startswith("0001"):
        return None
    if "." in value:
        return datetime.fromisoformat(value[:26].rstrip("Z") + "+00:00")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def translate(exc: BaseException, what: str, config_field: str | None = None) -> AdapterError:
    """A Docker library error as the adapters' error tree (agent/errors.py), in one line that
    starts with what was being done. `config_field`: the configuration key a failure of this call
    points at (creating a runner: runner.image for an image that is missing or cannot be pulled,
    runner.network for a missing network)."""
    explanation = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    line = str(explanation).splitlines()[0][:160]
    if isinstance(exc, docker.errors.ImageNotFound) or (
        config_field == "runner.image" and isinstance(exc, docker.errors.APIError) and "/images/create" in str(exc)
    ):
        return InvalidConfiguration(f"{what}: the image is not here and cannot be pulled ({line})", field="runner.image", what=what)
    if isinstance(exc, docker.errors.NotFound):
        if config_field is not None:
            field = "runner.network" if "network" in line.lower() else config_field
            return InvalidConfiguration(f"{what}: {line}", field=field, what=what)
        return NotFound(f"{what}: {line}", what=what)
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
        return Conflict(f"{what}: {line}", what=what)
    if isinstance(exc, docker.errors.APIError) and exc.status_code is not None and 400 <= exc.status_code < 500 and config_field:
        return InvalidConfiguration(f"{what}: {line}", field=config_field, what=what)
    return DockerError(f"{what}: Docker engine: {type(exc).__name__}: {line}", what=what)


def docker_runtime(config: AgentConfig, hostname: str, host: Host) -> DockerRuntime:
    """The `runner.runtime: docker` factory (agent/runtime/__init__.py): CDI for NVIDIA GPUs
    where dockerd has it on (gpu.cdi)."""
    runtime = DockerRuntime(config.runner, hostname)
    if config.gpu.cdi != "never" and any(g.vendor is GpuVendor.NVIDIA for g in host.gpus):
        runtime.cdi = use_cdi(config.gpu.cdi, runtime.cdi_spec_dirs())
    return runtime


def _label(key: str) -> str:
    return f"{LABEL}.{key}"


class DockerRuntime:
    def __init__(self, config: RunnerConfig, hostname: str, cdi: bool = False, dev_root: Path = Path("/dev")) -> None:
        self.config = config
        self.hostname = hostname
        self.cdi = cdi
        self.dev_root = dev_root  # where /dev/kfd is found on the host (tests point it elsewhere)
        self._client: docker.DockerClient | None = None

    # --- plumbing ---------------------------------------------------------------------------
    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.config.docker_host, timeout=30)
        return self._client

    async def _call(self, fn: Any, *args: Any, what: str = "Docker engine", config_field: str | None = None, **kwargs: Any) -> Any:
        """Run one Docker library call off the loop; every library error leaves as agent.errors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            error = translate(exc, what, config_field)
            if isinstance(error, DockerError):
                self._client = None  # reconnect next time (the engine may have restarted)
            raise error from None

    def reconfigure(self, config: AgentConfig) -> None:
        """A reloaded configuration (docker_host and config_dir need a restart: the daemon keeps them)."""
        self.config = config.runner

    def cdi_spec_dirs(self) -> list[str]:
        """dockerd's CDI spec directories (empty when CDI is off or the engine is unreachable)."""
        try:
            return list(self._docker().info().get("CDISpecDirs") or [])
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return []

    async def ping(self) -> None:
        await self._call(lambda: self._docker().ping())

    def _dir(self, name: str) -> Path:
        return self.config.config_dir / name

    # --- config.toml ------------------------------------------------------------------------------
    def render_config(self, spec: RunnerSpec) -> dict[str, Any]:
        """gitlab-runner's config.toml for one runner (runner_config.render_config)."""
        amd_intel = spec.gpu is not None and spec.gpu.vendor is not GpuVendor.NVIDIA
        return render_config(self.config, spec, gpu_devices=self.gpu_devices(spec.gpu) if spec.gpu and amd_intel else [],
                             gpu_groups=self.gpu_groups() if amd_intel else [])  # fmt: skip

    def gpu_devices(self, gpu: Gpu) -> list[str]:
        """AMD: /dev/kfd (compute, shared by all AMD GPUs) plus this card's render node; Intel:
        its render node. As `host:container` pairs; the container paths are the standard ones."""
        pairs = []
        if gpu.vendor is GpuVendor.AMD:
            pairs.append((str(self.dev_root / "kfd"), "/dev/kfd"))
        if gpu.render_node:
            pairs.append((gpu.render_node, f"/dev/dri/{Path(gpu.render_node).name}"))
        return [host if host == inside else f"{host}:{inside}" for host, inside in pairs]

    @staticmethod
    def gpu_groups() -> list[str]:
        """The host's render and video groups, by number: device nodes belong to the host's GIDs,
        and a job image may not know the names."""
        out = []
        for name in ("render", "video"):
            try:
                out.append(str(grp.getgrnam(name).gr_gid))
            except KeyError:
                continue
        return out

    def _container_gpu(self, spec: RunnerSpec) -> dict[str, Any]:
        """With the shell executor the job runs in the runner container, so it gets the GPU."""
        gpu = spec.gpu
        if gpu is None or self.config.executor != "shell":
            return {}
        if gpu.vendor is GpuVendor.NVIDIA:
            if self.cdi:  # dockerd resolves CDI names given as a "cdi" device request (Docker >= 25)
                return {"device_requests": [docker.types.DeviceRequest(driver="cdi", device_ids=[f"nvidia.com/gpu={gpu.id}"])]}
            return {"device_requests": [docker.types.DeviceRequest(driver="nvidia", device_ids=[gpu.id], capabilities=[["gpu"]])]}
        devices = [d if ":" in d else f"{d}:{d}" for d in self.gpu_devices(gpu)]
        return {"devices": [f"{d}:rwm" for d in devices], "group_add": self.gpu_groups()}

    def _write_config(self, spec: RunnerSpec) -> Path:
        directory = self._dir(spec.name)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        path = directory / "config.toml"
        tmp = directory / ".config.toml.tmp"
        # Created 0600 from the start: the token is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(self.render_config(spec), f)
        os.replace(tmp, path)
        if spec.ca_pem:
            # gitlab-runner reads /etc/gitlab-runner/certs/<host>.crt as the CA of <host>
            # (network/client.go, the host without its port).
            host = (urlsplit(spec.url).hostname or "").lower()
            certs = directory / "certs"
            certs.mkdir(exist_ok=True, mode=0o700)
            (certs / f"{host}.crt").write_text(spec.ca_pem)
        return path

    def _volumes(self, name: str) -> dict[str, dict[str, str]]:
        """The runner container's mounts: its config directory, read-only; and the Docker socket
        only where the executor needs it. The docker executor's manager starts each job's
        sibling containers through it; the shell executor runs the job inside this very
        container, so a socket there would hand every job root on the host (docs/security/)."""
        volumes = {str(self._dir(name)): {"bind": _CONFIG_MOUNT, "mode": "ro"}}
        if self.config.executor == "docker":
            volumes[DOCKER_SOCKET] = {"bind": DOCKER_SOCKET, "mode": "rw"}
        return volumes

    def _command(self, name: str) -> list[str]:
        config = f"{_CONFIG_MOUNT}/config.toml"
        if self.config.mode is RunnerMode.ONE_JOB:
            # run-single reads config.toml only for the runner named by --runner (commands/single.go
            # HandleArgs); without it, it wants --url and exits "Missing URL".
            return ["run-single", "--config", config, "--runner", name, "--max-builds", "1"]
        return ["run", "--config", config]

    # --- lifecycle --------------------------------------------------------------------------------
    async def create(self, spec: RunnerSpec) -> ManagedContainer:
        self._write_config(spec)
        labels = {
            _label("managed-by"): MANAGED_BY,
            _label("host"): self.hostname,
            _label("runner-id"): str(spec.gitlab_id),
            _label("tags"): ",".join(spec.tags),
            _label("run-untagged"): str(spec.run_untagged).lower(),
            _label("kind"): spec.kind.value,
            _label("platform"): spec.platform,
            _label("gpu"): spec.gpu.id if spec.gpu else "",
            _label("reach"): spec.reach or "",
        }

        def run() -> Any:
            return self._docker().containers.run(
                self.config.image,
                command=self._command(spec.name),
                name=spec.name,
                detach=True,
                labels=labels,
                volumes=self._volumes(spec.name),
                # The runner manager itself is light; the budget reserved per runner is for its
                # job container and is enforced there through config.toml.
                nano_cpus=int(min(spec.cpus, 1.0) * 1e9) if spec.cpus else None,
                mem_limit=f"{max(256, min(spec.memory_mb, 1024))}m" if spec.memory_mb else None,
                # Reusable runners come back after a Docker restart; a one-job runner that exits
                # has done its job and must stay down (the agent removes it).
                restart_policy={"Name": "no" if self.config.mode is RunnerMode.ONE_JOB else "unless-stopped"},
                network=self.config.network,
                stop_signal="SIGQUIT",
                init=False,
                **self._container_gpu(spec),
            )

        try:
            await self._call(run, what=f"creating runner container {spec.name} from {self.config.image}", config_field="runner.image")
        except BaseException:
            self.discard_dir(spec.name)
            with contextlib.suppress(AdapterError):  # a container created but not started: none is left
                await self._call(lambda: self._docker().containers.get(spec.name).remove(force=True, v=True))
            raise
        found = await self.get(spec.name)
        if found is None:
            raise DockerError(f"runner container {spec.name} vanished right after it was created", what=spec.name)
        return found

    async def get(self, name: str) -> RunnerInstance | None:
        try:
            container = await self._call(lambda: self._docker().containers.get(name))
        except NotFound:
            return None
        return self._view(container, {})

    async def list(self) -> builtins.list[RunnerInstance]:
        filters = {"label": [f"{_label('managed-by')}={MANAGED_BY}", f"{_label('host')}={self.hostname}"]}

        def read() -> tuple[Any, dict[str, int]]:
            client = self._docker()
            containers = client.containers.list(all=True, filters=filters)
            # Job containers carry the runner's name (config.toml container_labels): a runner that
            # owns one is busy, whatever GitLab's listing says (ISSUE 19, 5a).
            jobs: dict[str, int] = {}
            for job in client.containers.list(filters={"label": JOB_OF_LABEL}):
                owner = (job.labels or {}).get(JOB_OF_LABEL)
                if owner:
                    jobs[owner] = jobs.get(owner, 0) + 1
            return containers, jobs

        containers, jobs = await self._call(read, what="listing runner containers")
        return sorted((self._view(c, jobs) for c in containers), key=lambda c: c.name)

    def _view(self, container: Any, jobs: dict[str, int]) -> RunnerInstance:
        labels = container.labels or {}
        attrs = container.attrs
        state = attrs.get("State", {})
        docker_status = state.get("Status", "unknown")
        status = _STATUS.get(docker_status, RunnerStatus.UNKNOWN)
        created_at = _docker_time(attrs.get("Created"))
        started_at = _docker_time(state.get("StartedAt"))
        since = {RunnerStatus.RUNNING: started_at, RunnerStatus.EXITED: _docker_time(state.get("FinishedAt"))}.get(status, created_at)
        runner_id = labels.get(_label("runner-id"))
        gpu = labels.get(_label("gpu"))
        # The docker executor's jobs run in sibling containers, counted; the shell executor's run
        # inside the runner container, where this runtime cannot see them: unknown.
        owned = jobs.get(container.name, 0) if self.config.executor == "docker" else None
        return RunnerInstance(
            name=container.name,
            gitlab_id=parse_uint(runner_id),
            host=labels.get(_label("host"), ""),
            tags=[t for t in labels.get(_label("tags"), "").split(",") if t],
            run_untagged=labels.get(_label("run-untagged")) == "true",
            kind=RunnerKind(labels.get(_label("kind"), "native")),
            platform=labels.get(_label("platform"), ""),
            gpus=[gpu] if gpu else [],
            reach=labels.get(_label("reach")) or None,
            status=status,
            status_since=since,
            created_at=created_at,
            started_at=started_at,
            stop_requested_at=self._marker_time(container.name, "stopping"),
            abort_requested_at=self._marker_time(container.name, "aborting"),
            jobs=owned,
        )

    def _marker_time(self, name: str, marker: str) -> datetime | None:
        try:
            return datetime.fromtimestamp((self._dir(name) / marker).stat().st_mtime, UTC)
        except OSError:
            return None

    async def drain(self, name: str) -> None:
        """Graceful: SIGQUIT makes gitlab-runner take no new job and exit after the current one.
        The marker makes the intent survive an agent restart."""
        directory = self._dir(name)
        if directory.exists():
            (directory / "stopping").touch()
        await self._signal(name, "SIGQUIT")

    async def abort(self, name: str) -> None:
        """Forceful: SIGTERM makes gitlab-runner abort the job and remove its containers, within
        its shutdown_timeout (commands/multi.go). Recorded like the graceful stop."""
        directory = self._dir(name)
        if directory.exists():
            (directory / "aborting").touch()
        await self._signal(name, "SIGTERM")

    async def kill(self, name: str) -> None:
        await self._signal(name, "SIGKILL")

    # The names the agent used before the Protocol (tests and tools still call them).
    request_stop = drain
    force_kill = kill

    async def _signal(self, name: str, signal: str) -> None:
        """Signal a container; one that is gone or no longer running needs nothing more."""
        try:
            await self._call(lambda: self._docker().containers.get(name).kill(signal=signal), what=f"{signal} to {name}")
        except NotFound:
            return
        except AdapterError as exc:
            if "is not running" not in str(exc):
                raise

    async def remove(self, name: str) -> None:
        """Remove the container (force: it is only called for exited or orphaned ones) with its
        anonymous volumes (the official image declares VOLUME), whatever gitlab-runner left of
        its jobs (a killed runner cleans nothing), and its config directory with the token."""
        token = self._token_value(name)
        try:
            await self._call(lambda: self._docker().containers.get(name).remove(force=True, v=True), what=f"removing {name}")
        except NotFound:
            pass
        await self.remove_job_leftovers(name, token)
        self.discard_dir(name)

    async def leftovers(self, known: Collection[str]) -> builtins.list[str]:
        """Config directories whose container is gone (the agent died mid-create, or the container
        was removed by hand), with the job containers and volumes their runner left."""
        removed: builtins.list[str] = []
        for name in self.stale_dirs(set(known)):
            removed += await self.remove_job_leftovers(name, self._token_value(name))
            self.discard_dir(name)
            removed.append(name)
        return removed

    def credentials(self, name: str) -> SecretStr | None:
        """The runner's token from its config.toml, while the agent still has it."""
        return self.token_of(name)

    def token_of(self, name: str) -> SecretStr | None:
        """The runner's token from its config.toml, while the agent still has it."""
        value = self._token_value(name)
        return SecretStr(value) if value else None

    def _token_value(self, name: str) -> str | None:
        try:
            with open(self._dir(name) / "config.toml", "rb") as f:
                return str(tomllib.load(f)["runners"][0]["token"])
        except (OSError, KeyError, IndexError, tomllib.TOMLDecodeError):
            return None

    async def remove_job_leftovers(self, name: str, token: str | None) -> builtins.list[str]:
        """Job, helper and cache containers and volumes of this runner: found by the label the
        agent asked for (container_labels) and by gitlab-runner's own runner label."""
        selectors = [f"{JOB_OF_LABEL}={name}"]
        # gitlab-runner labels them with its short token, whose form changed in v18.2: both.
        by_token = [f"{GITLAB_RUNNER_LABEL}.runner.id={short}" for short in short_tokens(token)] if token else []

        def sweep() -> builtins.list[str]:
            client = self._docker()
            removed: builtins.list[str] = []
            for selector in selectors + by_token:
                for c in client.containers.list(all=True, filters={"label": selector}):
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True, v=True)
                        removed.append(c.name)
            for selector in by_token:  # volumes carry only gitlab-runner's labels
                for v in client.volumes.list(filters={"label": selector}):
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        v.remove(force=True)
                        removed.append(v.name)
            return removed

        return await self._call(sweep, what=f"removing what runner {name} left")

    def discard_dir(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def stale_dirs(self, known: set[str]) -> builtins.list[str]:
        """Config directories whose container is gone (e.g. the agent died mid-create)."""
        try:
            return sorted(p.name for p in self.config.config_dir.iterdir() if p.is_dir() and p.name not in known)
        except FileNotFoundError:
            return []

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
