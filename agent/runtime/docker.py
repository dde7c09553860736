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
from pydantic import Field, SecretStr

from ..config import RunnerConfig, RunnerMode
from ..model import Frozen, Gpu, GpuVendor, RunnerKind
from .runner_config import JOB_OF_LABEL, platform_check_script, render_config, short_tokens

__all__ = [
    "DockerError", "DockerRuntime", "ManagedContainer", "RunnerSpec", "LABEL", "JOB_OF_LABEL", "nvidia_cdi_specs",
    "platform_check_script", "short_tokens", "use_cdi",
]  # fmt: skip

LABEL = "io.autogit"
MANAGED_BY = "autogit-agent"
# gitlab-runner labels every container, volume and network it creates for a job with this
# prefix, and `.runner.id` with its ShortenToken(token) (executors/docker/internal/labels), whose
# form depends on the runner's version (runner_config.short_tokens).
GITLAB_RUNNER_LABEL = "com.gitlab.gitlab-runner"
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
    reach: str | None = Field(None, description="Where it is registered (`group:<id>`, `project:<id>`); None: instance-wide.")
    clone_url: str | None = Field(None, description="URL job helpers clone from when it is not GitLab's own.")
    ca_pem: str | None = Field(None, description="Private CA of GitLab, written to certs/<host>.crt for the runner.")


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
    reach: str | None = None
    status: str = Field(description="Docker's state: created, running, exited, ...")
    started_at: datetime | None
    stopping_since: datetime | None = Field(None, description="When a graceful stop was asked for.")
    aborting_since: datetime | None = Field(None, description="When the forceful stop (SIGTERM) was sent.")


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
        stopping = self._marker_time(container.name, "stopping")
        aborting = self._marker_time(container.name, "aborting")
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
            reach=labels.get(_label("reach")) or None,
            status=state.get("Status", "unknown"),
            started_at=started_at,
            stopping_since=stopping,
            aborting_since=aborting,
        )

    def _marker_time(self, name: str, marker: str) -> datetime | None:
        try:
            return datetime.fromtimestamp((self._dir(name) / marker).stat().st_mtime, UTC)
        except OSError:
            return None

    async def request_stop(self, name: str) -> None:
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
        """Remove the container (force: it is only called for exited or orphaned ones) with its
        anonymous volumes (the official image declares VOLUME), whatever gitlab-runner left of
        its jobs (a killed runner cleans nothing), and its config directory with the token."""
        token = self._token_value(name)
        try:
            await self._call(lambda: self._docker().containers.get(name).remove(force=True, v=True))
        except docker.errors.NotFound:
            pass
        await self.remove_job_leftovers(name, token)
        self.discard_dir(name)

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

        return await self._call(sweep)

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
