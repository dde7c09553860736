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
import grp
import os
import shutil
from datetime import datetime, UTC
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests
import tomli_w
from pydantic import Field, SecretStr

from ..config import RunnerConfig, RunnerMode
from ..model import Frozen, Gpu, GpuVendor, RunnerKind

__all__ = ["DockerError", "DockerRuntime", "ManagedContainer", "RunnerSpec", "LABEL", "nvidia_cdi_specs", "use_cdi"]

LABEL = "io.autogit"
MANAGED_BY = "autogit-agent"
_CONFIG_MOUNT = "/etc/gitlab-runner"


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


class DockerError(RuntimeError):
    """Any failure talking to the Docker engine; one line."""


class RunnerSpec(Frozen):
    name: str = Field(description="Container name, also the runner's id in the planner.")
    gitlab_id: int
    token: SecretStr
    url: str = Field(description="GitLab URL as seen from inside the runner container.")
    tags: list[str]
    run_untagged: bool
    kind: RunnerKind
    platform: str
    gpu: Gpu | None = None
    cpus: float
    memory_mb: int


class ManagedContainer(Frozen):
    name: str
    id: str
    gitlab_id: int | None
    host: str
    tags: list[str]
    run_untagged: bool
    kind: RunnerKind
    platform: str
    gpu: str | None
    status: str = Field(description="Docker's state: created, running, exited, ...")
    started_at: datetime | None
    stopping_since: datetime | None = Field(None, description="When a graceful stop was asked for.")


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

    async def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.NotFound:
            raise
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            self._client = None  # reconnect next time (the engine may have restarted)
            raise DockerError(f"Docker engine: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None

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
        docker_table: dict[str, Any] = {
            "image": self.config.job_image,
            "privileged": self.config.privileged_jobs,
            "volumes": ["/cache"],
            "cpus": f"{spec.cpus:g}" if spec.cpus else "",
            "memory": f"{spec.memory_mb}m" if spec.memory_mb else "",
        }
        docker_table = {k: v for k, v in docker_table.items() if v != ""}
        gpu = spec.gpu
        if gpu is not None:
            # Exactly the allocated GPU, and nothing else of /dev (ADR-004).
            if gpu.vendor is GpuVendor.NVIDIA:
                if self.cdi:
                    docker_table["devices"] = [f"nvidia.com/gpu={gpu.id}"]
                else:
                    docker_table["gpus"] = f"device={gpu.id}"
            else:
                docker_table["devices"] = self.gpu_devices(gpu)
                docker_table["group_add"] = self.gpu_groups()
        runner: dict[str, Any] = {
            "name": spec.name,
            "url": spec.url,
            "token": spec.token.get_secret_value(),
            "executor": self.config.executor,
            "limit": 1,
            "request_concurrency": 1,
            "docker": docker_table,
        }
        return {
            "concurrent": 1,
            "check_interval": self.config.check_interval,
            "shutdown_timeout": int(self.config.shutdown_timeout),
            "log_level": "info",
            "runners": [runner],
        }

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
        return path

    def _command(self) -> list[str]:
        config = f"{_CONFIG_MOUNT}/config.toml"
        if self.config.mode is RunnerMode.ONE_JOB:
            return ["run-single", "--config", config, "--max-builds", "1"]
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
        }

        def run() -> Any:
            return self._docker().containers.run(
                self.config.image,
                command=self._command(),
                name=spec.name,
                detach=True,
                labels=labels,
                volumes={
                    str(self._dir(spec.name)): {"bind": _CONFIG_MOUNT, "mode": "ro"},
                    "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                },
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
            await self._call(run)
        except BaseException:
            self.discard_dir(spec.name)
            raise
        found = await self.get(spec.name)
        assert found is not None
        return found

    async def get(self, name: str) -> ManagedContainer | None:
        try:
            container = await self._call(lambda: self._docker().containers.get(name))
        except docker.errors.NotFound:
            return None
        return self._view(container)

    async def list(self) -> list[ManagedContainer]:
        filters = {"label": [f"{_label('managed-by')}={MANAGED_BY}", f"{_label('host')}={self.hostname}"]}
        containers = await self._call(lambda: self._docker().containers.list(all=True, filters=filters))
        return sorted((self._view(c) for c in containers), key=lambda c: c.name)

    def _view(self, container: Any) -> ManagedContainer:
        labels = container.labels or {}
        state = container.attrs.get("State", {})
        started = state.get("StartedAt")
        started_at = None
        if started and not started.startswith("0001"):
            started_at = datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00") if "." in started else datetime.fromisoformat(started.replace("Z", "+00:00"))
        marker = self._dir(container.name) / "stopping"
        stopping = None
        try:
            stopping = datetime.fromtimestamp(marker.stat().st_mtime, UTC)
        except OSError:
            pass
        runner_id = labels.get(_label("runner-id"))
        return ManagedContainer(
            name=container.name,
            id=container.id,
            gitlab_id=int(runner_id) if runner_id and runner_id.isdigit() else None,
            host=labels.get(_label("host"), ""),
            tags=[t for t in labels.get(_label("tags"), "").split(",") if t],
            run_untagged=labels.get(_label("run-untagged")) == "true",
            kind=RunnerKind(labels.get(_label("kind"), "native")),
            platform=labels.get(_label("platform"), ""),
            gpu=labels.get(_label("gpu")) or None,
            status=state.get("Status", "unknown"),
            started_at=started_at,
            stopping_since=stopping,
        )

    async def request_stop(self, name: str) -> None:
        """Graceful: SIGQUIT makes gitlab-runner take no new job and exit after the current one.
        The marker makes the intent survive an agent restart."""
        directory = self._dir(name)
        if directory.exists():
            (directory / "stopping").touch()
        await self._signal(name, "SIGQUIT")

    async def force_kill(self, name: str) -> None:
        await self._signal(name, "SIGKILL")

    async def _signal(self, name: str, signal: str) -> None:
        """Signal a container; one that is gone or no longer running needs nothing more."""
        try:
            await self._call(lambda: self._docker().containers.get(name).kill(signal=signal))
        except docker.errors.NotFound:
            return
        except DockerError as exc:
            if "is not running" not in str(exc):
                raise

    async def remove(self, name: str) -> None:
        """Remove the container (force: it is only called for exited or orphaned ones) and its
        config directory with the token."""
        try:
            await self._call(lambda: self._docker().containers.get(name).remove(force=True))
        except docker.errors.NotFound:
            pass
        self.discard_dir(name)

    def discard_dir(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def stale_dirs(self, known: set[str]) -> list[str]:
        """Config directories whose container is gone (e.g. the agent died mid-create)."""
        try:
            return sorted(p.name for p in self.config.config_dir.iterdir() if p.is_dir() and p.name not in known)
        except FileNotFoundError:
            return []

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
