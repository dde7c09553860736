#!/usr/bin/python3
"""AutoGit's gitlab-runner DOUBLE: the entry point of the test image ``autogit-test/runner:<hash>``.

This is not GitLab Runner. The real one cannot be built here: the Go module proxy refuses
gitlab-runner v17.11.3 and ten of its gitlab.com dependencies (docs/runners/real-runner.md). So
this double behaves as gitlab-runner v17.11.3 (commit 3995fbff) does wherever AutoGit depends on
it, and is at least as strict. Each rule names the gitlab-runner source file it comes from:

- command line (commands/single.go, commands/multi.go): ``run --config F``; ``run-single`` reads
  config.toml only for ``--runner NAME`` (HandleArgs) and otherwise wants ``--url``: "Missing URL";
  run-single ignores the global check_interval and shutdown_timeout and polls every 3 s
  (common.CheckInterval), sleeping 300 s (common.NotHealthyCheckInterval) after an unhealthy request;
- config.toml (common/config.go): every key must be one of gitlab-runner's own, checked per table
  (Config, RunnerConfig + RunnerCredentials + RunnerSettings, DockerConfig + docker.Credentials,
  CacheConfig); an unknown key or a wrongly typed value refuses to start (the real runner logs and
  goes on: stricter is allowed, lenient is not);
- signals (commands/multi.go, commands/single.go waitForInterrupts): SIGQUIT = graceful (no new
  job, the current one finishes, no time limit; more SIGQUITs change nothing); SIGTERM/SIGINT =
  forceful: the job is aborted and its containers removed within the global ``shutdown_timeout``
  (default 30 s, common/consts.go DefaultShutdownTimeout), after which the process exits anyway;
  SIGKILL leaves everything behind, as with the real one;
- health (common/consts.go, network/gitlab.go RequestJob): a request that cannot reach GitLab
  or gets 403 is unhealthy; after ``unhealthy_requests_limit`` (3) in a row the runner stops asking
  for ``unhealthy_interval`` (default 60 min);
- the docker executor (executors/docker/): per job a cache volume for each non-bind entry of
  ``volumes`` and for the builds dir (``runner-<short token>-project-<id>-concurrent-0-cache-<md5>``,
  common/build.go, internal/volumes/manager.go), a helper container (type ``predefined``) from
  ``helper_image`` that gets the sources, and a build container (type ``build``) from the job's
  image on the job's platform (``image.executor_opts.docker.platform``; the helper stays native);
  every one labelled ``com.gitlab.gitlab-runner.*`` (internal/labels/labels.go) plus
  ``container_labels`` on containers; ``devices`` entries are host paths (parseDeviceString),
  ``gpus`` is parsed like ``docker run --gpus``; ``network_mode`` is the job containers' network;
  ``pull_policy`` (default ``always``) decides pulls, and with no ``helper_image`` the helper is
  registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.11.3
  (helpers/container/helperimage/info.go), which this machine cannot pull;
- ``pre_build_script`` runs in the build container before the script (common/build.go); the
  job's containers are removed after the job, its cache volumes are kept;
- TLS (network/client.go): the CA of <host> is /etc/gitlab-runner/certs/<host>.crt;
- the job protocol (network/gitlab.go): POST /api/v4/jobs/request, PATCH /api/v4/jobs/:id/trace with
  Content-Range, PUT /api/v4/jobs/:id with state, failure_reason, exit_code and output checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import tomllib
import zlib
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import docker.types
import requests

VERSION = "17.11.3"  # the version whose behaviour this double reproduces
REVISION = "3995fbff"
CONFIG_DIR = "/etc/gitlab-runner"
DEFAULT_HELPER_IMAGE = f"registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v{VERSION}"
CHECK_INTERVAL_S = 3.0  # common.CheckInterval
NOT_HEALTHY_CHECK_INTERVAL_S = 300.0  # common.NotHealthyCheckInterval (run-single)
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0  # common.DefaultShutdownTimeout
DEFAULT_UNHEALTHY_LIMIT = 3  # common.DefaultUnhealthyRequestsLimit
DEFAULT_UNHEALTHY_INTERVAL_S = 3600.0  # common.DefaultUnhealthyInterval
LABEL = "com.gitlab.gitlab-runner"
BUILDS_DIR = "/builds"

# The toml tags of gitlab-runner's config structs at v17.11.3 (common/config.go;
# helpers/docker/credentials.go for the docker table's embedded Credentials).
CONFIG_KEYS = frozenset(
    "listen_address session_server concurrent check_interval log_level log_format user runners sentry_dsn "
    "connection_max_age experimental shutdown_timeout".split()
)
RUNNER_KEYS = frozenset(
    # RunnerConfig
    "name limit output_limit request_concurrency unhealthy_requests_limit unhealthy_interval "
    "job_status_final_update_retry_limit "
    # RunnerCredentials
    "url id token token_obtained_at token_expires_at tls-ca-file tls-cert-file tls-key-file "
    # RunnerSettings
    "executor builds_dir cache_dir clone_url environment proxy_exec pre_get_sources_script "
    "post_get_sources_script pre_build_script post_build_script debug_trace_disabled safe_directory_checkout "
    "clean_git_config shell custom_build_dir referees cache feature_flags monitoring instance ssh docker "
    "parallels virtualbox machine kubernetes custom autoscaler step_runner_image".split()
)
DOCKER_KEYS = frozenset(
    "host tls_cert_path tls_verify "  # docker.Credentials
    "hostname image runtime memory memory_swap memory_reservation cgroup_parent cpuset_cpus cpuset_mems cpus "
    "cpu_shares dns dns_search privileged services_privileged disable_entrypoint_overwrite user allowed_users "
    "group_add userns_mode cap_add cap_drop oom_kill_disable oom_score_adjust security_opt services_security_opt "
    "devices device_cgroup_rules gpus services_devices disable_cache volumes volume_driver volume_driver_ops "
    "cache_dir extra_hosts volumes_from network_mode ipcmode mac_address links services services_limit "
    "service_memory service_memory_swap service_memory_reservation service_cgroup_parent service_cpuset_cpus "
    "service_cpus service_cpu_shares service_gpus wait_for_services_timeout allowed_images "
    "allowed_privileged_images allowed_privileged_services allowed_pull_policies allowed_services pull_policy "
    "isolation shm_size tmpfs services_tmpfs sysctls helper_image helper_image_flavor container_labels "
    "enable_ipv6 ulimit network_mtu".split()
)
CACHE_KEYS = frozenset("Type Path Shared MaxUploadedArchiveSize s3 gcs azure".split())
PULL_POLICIES = ("always", "if-not-present", "never")  # common/config.go DockerPullPolicy
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_GO_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def log(message: str) -> None:
    print(f"gitlab-runner (AutoGit double of {VERSION}): {message}", file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """logrus.Fatalln: the message, exit status 1."""
    log(f"FATAL: {message}")
    sys.exit(1)


class ConfigProblem(ValueError):
    pass


def go_duration_s(value: Any, where: str) -> float:
    """A time.Duration in config.toml: a Go duration string ("15s", "1h30m") or nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1e-9
    if isinstance(value, str) and _GO_DURATION.match(value):
        return sum(float(n) * _GO_UNIT_S[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value))
    raise ConfigProblem(f"{where}: {value!r} is not a duration (e.g. \"15s\")")


def _keys(table: dict[str, Any], known: frozenset[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigProblem(f"{where}.{key}: not a gitlab-runner {VERSION} config key (common/config.go)")


def _int(table: dict[str, Any], key: str, where: str) -> None:
    if key in table and (not isinstance(table[key], int) or isinstance(table[key], bool)):
        raise ConfigProblem(f"{where}.{key}: {table[key]!r} is not an integer")


def validate(config: dict[str, Any]) -> None:
    _keys(config, CONFIG_KEYS, "config")
    for key in ("concurrent", "check_interval", "shutdown_timeout"):
        _int(config, key, "config")
    runners = config.get("runners", [])
    if not isinstance(runners, list):
        raise ConfigProblem("config.runners: not an array of tables")
    for i, runner in enumerate(runners):
        where = f"runners[{i}]"
        _keys(runner, RUNNER_KEYS, where)
        for key in ("limit", "request_concurrency", "unhealthy_requests_limit", "output_limit"):
            _int(runner, key, where)
        if "unhealthy_interval" in runner:
            go_duration_s(runner["unhealthy_interval"], f"{where}.unhealthy_interval")
        table = runner.get("docker")
        if table is not None:
            _keys(table, DOCKER_KEYS, f"{where}.docker")
            policy = table.get("pull_policy", [])
            for p in [policy] if isinstance(policy, str) else policy:
                if p not in PULL_POLICIES:
                    raise ConfigProblem(f"{where}.docker.pull_policy: {p!r} is not one of {', '.join(PULL_POLICIES)}")
            for key in ("volumes", "devices", "group_add"):
                if key in table and not (isinstance(table[key], list) and all(isinstance(v, str) for v in table[key])):
                    raise ConfigProblem(f"{where}.docker.{key}: not an array of strings")
            for device in table.get("devices", []):
                if device.count(":") > 2:
                    raise ConfigProblem(f"{where}.docker.devices: {device!r}: too many colons")
            if "container_labels" in table and not isinstance(table["container_labels"], dict):
                raise ConfigProblem(f"{where}.docker.container_labels: not a table")
        if isinstance(runner.get("cache"), dict):
            _keys(runner["cache"], CACHE_KEYS, f"{where}.cache")


def load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
        validate(config)
    except (OSError, tomllib.TOMLDecodeError, ConfigProblem) as exc:
        fatal(f"Error loading config: {type(exc).__name__}: {exc}")
    return config


def short_token(token: str) -> str:
    """helpers/shorten_token.go ShortenToken."""
    if len(token) < 8:
        return token
    for prefix in ("glrt-", "glrtr-", "glcbt-"):
        if token.startswith(prefix):
            return token[len(prefix) : len(prefix) + 9]
    return token[:8]


def system_id() -> str:
    """common/system_id_state.go: an `s_` id kept in .runner_system_id next to config.toml."""
    path = os.path.join(CONFIG_DIR, ".runner_system_id")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return "s_" + secrets.token_hex(6)  # config dir is read-only: a new id per process


@dataclass
class Job:
    payload: dict[str, Any]
    trace: bytearray = field(default_factory=bytearray)
    sent: int = 0

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def token(self) -> str:
        return str(self.payload["token"])

    def variable(self, key: str, default: str = "") -> str:
        for v in self.payload.get("variables") or []:
            if v.get("key") == key:
                return str(v.get("value") or "")
        return default


class Aborted(Exception):
    """SIGTERM arrived while a job ran."""


class JobFailure(Exception):
    def __init__(self, reason: str, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.reason, self.exit_code = reason, exit_code


class Runner:
    def __init__(self, entry: dict[str, Any], *, single: bool, shutdown_timeout_s: float, check_interval_s: float) -> None:
        self.entry = entry
        self.name = str(entry.get("name") or "")
        self.url = str(entry.get("url") or "").rstrip("/")
        self.token = str(entry.get("token") or "")
        self.single = single
        self.shutdown_timeout_s = shutdown_timeout_s
        self.check_interval_s = check_interval_s
        self.unhealthy_limit = int(entry.get("unhealthy_requests_limit") or DEFAULT_UNHEALTHY_LIMIT)
        interval = entry.get("unhealthy_interval")
        self.unhealthy_interval_s = go_duration_s(interval, "unhealthy_interval") if interval is not None else DEFAULT_UNHEALTHY_INTERVAL_S
        self.docker_table: dict[str, Any] = dict(entry.get("docker") or {})
        self.session = requests.Session()
        host = (requests.utils.urlparse(self.url).hostname or "").lower()
        ca = os.path.join(CONFIG_DIR, "certs", f"{host}.crt")
        if os.path.exists(ca):
            self.session.verify = ca
        self.system_id = system_id()
        self.draining = threading.Event()  # SIGQUIT
        self.aborting = threading.Event()  # SIGTERM / SIGINT
        self.wake = threading.Event()
        self.failures = 0
        self.last_update = ""
        self._docker: docker.DockerClient | None = None
        self.current: list[str] = []  # containers of the running job

    # --- signals -----------------------------------------------------------------------------
    def on_quit(self, *_: object) -> None:
        log("Requested quit, waiting for builds to finish")
        self.draining.set()
        self.wake.set()

    def on_term(self, signum: int, *_: object) -> None:
        if self.aborting.is_set():
            return
        log(f"Requested exit: {signal.Signals(signum).name}; forceful shutdown (timeout {self.shutdown_timeout_s:g} s)")
        self.aborting.set()
        self.draining.set()
        self.wake.set()
        # The forceful shutdown is bounded: past it the process exits whatever is left.
        def give_up() -> None:
            log("forceful shutdown timed out")
            os._exit(1)

        timer = threading.Timer(self.shutdown_timeout_s, give_up)
        timer.daemon = True
        timer.start()

    # --- the loop ----------------------------------------------------------------------------
    def serve(self, max_builds: int) -> int:
        log(f"Starting runner for {self.url} with token {short_token(self.token)} ... (executor docker)")
        done = 0
        while not self.draining.is_set():
            if self.failures >= self.unhealthy_limit and not self.single:
                log(f"Runner is not healthy and will be disabled for {self.unhealthy_interval_s:g} s")
                self.sleep(self.unhealthy_interval_s)
                self.failures = 0
                continue
            job, healthy = self.request_job()
            if not healthy:
                self.failures += 1
                if self.single:
                    log("Runner is not healthy!")
                    self.sleep(NOT_HEALTHY_CHECK_INTERVAL_S)
                else:
                    self.sleep(self.check_interval_s)
                continue
            self.failures = 0
            if job is None:
                self.sleep(self.check_interval_s)
                continue
            self.run_job(job)
            done += 1
            if max_builds and done >= max_builds:
                log("This runner has processed its build limit, so now exiting")
                break
        log("exiting")
        return 0

    def sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    # --- protocol (network/gitlab.go) --------------------------------------------------------------
    def request_job(self) -> tuple[Job | None, bool]:
        body: dict[str, Any] = {
            "token": self.token,
            "system_id": self.system_id,
            "last_update": self.last_update,
            "info": {
                "name": "gitlab-runner", "version": VERSION, "revision": REVISION, "platform": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
                "executor": "docker", "shell": "bash",
                "features": {"variables": True, "image": True, "services": True, "artifacts": True, "cache": True,
                             "shared": False, "upload_multiple_artifacts": True, "upload_raw_artifacts": True,
                             "session": False, "terminal": False, "refspecs": True, "masking": True, "proxy": False,
                             "raw_variables": True, "artifacts_exclude": True, "multi_build_steps": True,
                             "trace_reset": True, "trace_checksum": True, "trace_size": True, "vault_secrets": False,
                             "cancelable": True, "return_exit_code": True, "service_variables": True,
                             "service_multiple_aliases": True, "image_executor_opts": True, "native_steps_integration": False},
            },
        }  # fmt: skip
        try:
            resp = self.session.post(f"{self.url}/api/v4/jobs/request", json=body, timeout=(10, 60 * 60))
        except requests.RequestException as exc:
            log(f"Checking for jobs... error: {type(exc).__name__}")
            return None, False
        self.last_update = resp.headers.get("X-GitLab-Last-Update", self.last_update)
        if resp.status_code == 201:
            return Job(resp.json()), True
        if resp.status_code == 204:
            return None, True
        if resp.status_code == 403:
            log("Checking for jobs... forbidden")
            return None, False
        log(f"Checking for jobs... failed: {resp.status_code}")
        return None, True

    def patch_trace(self, job: Job) -> None:
        data = bytes(job.trace[job.sent :])
        if not data:
            return
        start = job.sent
        try:
            resp = self.session.patch(
                f"{self.url}/api/v4/jobs/{job.id}/trace", data=data, timeout=30,
                headers={"Job-Token": job.token, "Content-Type": "text/plain", "Content-Range": f"{start}-{start + len(data) - 1}"},
            )  # fmt: skip
        except requests.RequestException:
            return  # resent from the same offset next time
        if resp.status_code == 202:
            job.sent = start + len(data)
        elif resp.status_code == 416:  # GitLab says where it is
            m = re.match(r"0-(\d+)", resp.headers.get("Range", ""))
            if m:
                job.sent = int(m.group(1))
        elif resp.status_code == 403 and resp.headers.get("Job-Status") == "canceled":
            self.aborting.set()  # a canceled job is aborted at once

    def update_job(self, job: Job, state: str, reason: str | None, exit_code: int | None) -> None:
        output = {"checksum": f"crc32:{zlib.crc32(bytes(job.trace)) & 0xFFFFFFFF:08x}", "bytesize": len(job.trace)}
        body: dict[str, Any] = {"token": job.token, "state": state, "output": output}
        if reason:
            body["failure_reason"] = reason
        if exit_code is not None:
            body["exit_code"] = exit_code
        for attempt in range(60):  # job_status_final_update_retry_limit is 10 by default; longer here for outages
            self.patch_trace(job)
            try:
                resp = self.session.put(f"{self.url}/api/v4/jobs/{job.id}", json=body, timeout=30)
                if resp.status_code == 200 or resp.status_code == 403:
                    return
            except requests.RequestException:
                pass
            time.sleep(min(3.0, 0.5 * (attempt + 1)))
        log(f"job {job.id}: could not report its final state")

    # --- the docker executor -------------------------------------------------------------------------
    def docker_client(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = docker.DockerClient(base_url=self.docker_table.get("host") or "unix:///var/run/docker.sock", timeout=120)
        return self._docker

    def write(self, job: Job, text: str | bytes) -> None:
        job.trace += text.encode() if isinstance(text, str) else text

    def run_job(self, job: Job) -> None:
        log(f"Checking for jobs... received job={job.id}")
        stop_flush = threading.Event()

        def flusher() -> None:
            while not stop_flush.wait(1.0):
                self.patch_trace(job)

        threading.Thread(target=flusher, daemon=True).start()
        self.write(job, f"Running with gitlab-runner {VERSION} (AutoGit double; {REVISION})\n  on {self.name} {short_token(self.token)}\n")
        state, reason, code = "success", None, None
        try:
            self.execute(job)
            self.write(job, "Job succeeded\n")
        except JobFailure as exc:
            state, reason, code = "failed", exc.reason, exc.exit_code
            self.write(job, f"ERROR: Job failed: {exc}\n")
        except Aborted:
            state, reason = "failed", "runner_system_failure"
            self.write(job, "ERROR: Job failed: aborted by the runner's forceful shutdown\n")
        except Exception as exc:  # noqa: BLE001 - a broken job is a system failure, never the runner's end
            state, reason = "failed", "runner_system_failure"
            first = (str(exc).splitlines() or [""])[0][:300]
            self.write(job, f"ERROR: Job failed (system failure): {type(exc).__name__}: {first}\n")
        finally:
            self.cleanup_containers()
            stop_flush.set()
        self.update_job(job, state, reason, code)
        log(f"Job {job.id} finished: {state}")

    def cleanup_containers(self) -> None:
        for cid in self.current:
            try:
                self.docker_client().containers.get(cid).remove(force=True, v=True)
            except docker.errors.DockerException:
                pass
        self.current = []

    def labels(self, job: Job, kind: str) -> dict[str, str]:
        p = job.payload
        labels = {
            f"{LABEL}.job.id": str(job.id),
            f"{LABEL}.job.sha": str((p.get("git_info") or {}).get("sha", "")),
            f"{LABEL}.job.ref": str((p.get("git_info") or {}).get("ref", "")),
            f"{LABEL}.project.id": str((p.get("job_info") or {}).get("project_id", "")),
            f"{LABEL}.pipeline.id": job.variable("CI_PIPELINE_ID"),
            f"{LABEL}.runner.id": short_token(self.token),
            f"{LABEL}.runner.local_id": "0",
            f"{LABEL}.managed": "true",
            f"{LABEL}.type": kind,
        }
        return labels

    def ensure_image(self, job: Job, name: str, image_platform: str | None) -> None:
        """pull_policy, in order (executors/docker/internal/pull/manager.go): `never` takes only a
        local image, `if-not-present` pulls when none is local, `always` pulls every time."""
        policy = self.docker_table.get("pull_policy") or ["always"]
        policies = [policy] if isinstance(policy, str) else list(policy)
        client = self.docker_client()
        errors = []
        for p in policies:
            if p in ("never", "if-not-present"):
                try:
                    image = client.images.get(name)
                    wanted = (image_platform or "").split("/")[1:2]
                    if wanted and image.attrs.get("Architecture") != wanted[0]:
                        raise JobFailure("runner_system_failure", f"image {name} is {image.attrs.get('Architecture')}, not {image_platform}")
                    self.write(job, f"Using locally found image {name} ...\n")
                    return
                except docker.errors.ImageNotFound:
                    if p == "never":
                        errors.append(f"image {name} not found locally and pull_policy is never")
                        continue
            try:
                self.write(job, f"Pulling docker image {name} ...\n")
                client.images.pull(name, platform=image_platform)
                return
            except docker.errors.DockerException as exc:
                errors.append(f"pulling {name}: {str(exc).splitlines()[0][:200]}")
        raise JobFailure("image_pull_failure", "; ".join(errors))

    def volume(self, job: Job, path: str) -> str:
        project = (job.payload.get("job_info") or {}).get("project_id", 0)
        name = f"runner-{short_token(self.token)}-project-{project}-concurrent-0-cache-{hashlib.md5(path.encode()).hexdigest()}"
        client = self.docker_client()
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            labels = {k: v for k, v in self.labels(job, "cache").items()}
            client.volumes.create(name=name, labels=labels)
        return name

    def mounts(self, job: Job) -> dict[str, dict[str, str]]:
        binds: dict[str, dict[str, str]] = {self.volume(job, BUILDS_DIR): {"bind": BUILDS_DIR, "mode": "rw"}}
        for spec in self.docker_table.get("volumes", []):
            parts = spec.split(":")
            if len(parts) == 1:
                binds[self.volume(job, parts[0])] = {"bind": parts[0], "mode": "rw"}
            else:
                binds[parts[0]] = {"bind": parts[1], "mode": parts[2] if len(parts) > 2 else "rw"}
        return binds

    def common_kwargs(self, job: Job) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"detach": True, "volumes": self.mounts(job), "stdin_open": False}
        if self.docker_table.get("network_mode"):
            kwargs["network_mode"] = self.docker_table["network_mode"]
        return kwargs

    def run_container(self, job: Job, image: str, script: str, kind: str, deadline: float, **extra: Any) -> int:
        client = self.docker_client()
        labels = self.labels(job, kind)
        if kind == "build":
            labels.update({str(k): str(v) for k, v in (self.docker_table.get("container_labels") or {}).items()})
        env = [f"{v['key']}={v.get('value') or ''}" for v in job.payload.get("variables") or []]
        project_dir = f"{BUILDS_DIR}/{job.variable('CI_PROJECT_PATH', 'project')}"
        env += [f"CI_PROJECT_DIR={project_dir}", f"CI_BUILDS_DIR={BUILDS_DIR}"]
        name = f"runner-{short_token(self.token)}-project-{(job.payload.get('job_info') or {}).get('project_id', 0)}-concurrent-0-{secrets.token_hex(8)}-{kind}"
        container = client.containers.create(
            image, command=["sh", "-c", script], name=name, labels=labels, environment=env, working_dir=BUILDS_DIR,
            **self.common_kwargs(job), **extra,
        )  # fmt: skip
        self.current.append(container.id)
        container.start()
        stream = container.logs(stream=True, follow=True)
        def forward() -> None:
            for chunk in stream:
                self.write(job, chunk)

        pump = threading.Thread(target=forward, daemon=True)
        pump.start()
        while True:
            if self.aborting.is_set():
                container.kill()
                raise Aborted()
            if time.monotonic() > deadline:
                container.kill()
                raise JobFailure("job_execution_timeout", "execution took longer than the job timeout")
            container.reload()
            if container.status in ("exited", "dead"):
                pump.join(timeout=5)
                return int(container.attrs["State"]["ExitCode"])
            time.sleep(0.1)

    def run_local(self, job: Job, script: str, deadline: float) -> int:
        """The shell executor: the script runs in this (the runner's) container."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
        env.update({str(v["key"]): str(v.get("value") or "") for v in job.payload.get("variables") or []})
        project_dir = f"{BUILDS_DIR}/{job.id}"
        os.makedirs(project_dir, exist_ok=True)
        env.update({"CI_PROJECT_DIR": project_dir, "CI_BUILDS_DIR": BUILDS_DIR})
        proc = subprocess.Popen(["sh", "-c", script], env=env, cwd=project_dir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        assert proc.stdout is not None
        out: Any = proc.stdout  # a BufferedReader: read1 returns what is there

        def forward() -> None:
            for chunk in iter(lambda: out.read1(4096), b""):
                self.write(job, chunk)

        pump = threading.Thread(target=forward, daemon=True)
        pump.start()
        try:
            while proc.poll() is None:
                if self.aborting.is_set() or time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if self.aborting.is_set():
                        raise Aborted()
                    raise JobFailure("job_execution_timeout", "execution took longer than the job timeout")
                time.sleep(0.1)
        finally:
            pump.join(timeout=5)
        return proc.returncode

    def build_kwargs(self, image_platform: str | None) -> dict[str, Any]:
        t = self.docker_table
        kwargs: dict[str, Any] = {"privileged": bool(t.get("privileged", False))}
        if image_platform:
            kwargs["platform"] = image_platform
        if t.get("cpus"):
            kwargs["nano_cpus"] = int(float(t["cpus"]) * 1e9)
        if t.get("memory"):
            kwargs["mem_limit"] = t["memory"]
        if t.get("group_add"):
            kwargs["group_add"] = list(t["group_add"])
        if t.get("devices"):
            # Host paths, as parseDeviceString reads them: PathOnHost[:PathInContainer[:perms]].
            devices = []
            for spec in t["devices"]:
                parts = spec.split(":")
                host, inside = parts[0], parts[1] if len(parts) > 1 else parts[0]
                devices.append(f"{host}:{inside}:{parts[2] if len(parts) > 2 else 'rwm'}")
            kwargs["devices"] = devices
        if t.get("gpus"):
            # `docker run --gpus` syntax: "all", a count, or "device=<id>[,<id>]".
            gpus = str(t["gpus"])
            if gpus.startswith("device="):
                request = docker.types.DeviceRequest(device_ids=gpus[len("device="):].split(","), capabilities=[["gpu"]])
            else:
                request = docker.types.DeviceRequest(count=-1 if gpus == "all" else int(gpus), capabilities=[["gpu"]])
            kwargs["device_requests"] = [request]
        return kwargs

    def script_lines(self, job: Job) -> tuple[list[str], list[str]]:
        """The build script (pre_build_script, the job's lines echoed, post_build_script) and the
        after_script lines (common/build.go, shells/abstract.go)."""
        steps = {s.get("name"): s for s in job.payload.get("steps") or []}
        lines = ["set -e", 'cd "$CI_PROJECT_DIR"']
        if self.entry.get("pre_build_script"):
            lines.append(str(self.entry["pre_build_script"]))
        for line in steps.get("script", {}).get("script") or []:
            lines.append(f"echo {shell_quote('$ ' + line)}")
            lines.append(line)
        if self.entry.get("post_build_script"):
            lines.append(str(self.entry["post_build_script"]))
        after = ['cd "$CI_PROJECT_DIR"'] + [f"echo {shell_quote('$ ' + x)}\n{x}" for x in steps.get("after_script", {}).get("script") or []]
        return lines, (after if len(after) > 1 else [])

    def execute(self, job: Job) -> None:
        if self.entry.get("executor") == "shell":
            return self.execute_shell(job)
        payload = job.payload
        image_def = payload.get("image") or {}
        image = image_def.get("name") or self.docker_table.get("image")
        if not image:
            raise JobFailure("runner_system_failure", "no image: neither the job nor [runners.docker] image names one")
        image_platform = (((image_def.get("executor_opts") or {}).get("docker") or {}).get("platform") or None)
        helper = self.docker_table.get("helper_image") or DEFAULT_HELPER_IMAGE
        timeout_s = float((payload.get("runner_info") or {}).get("timeout") or 3600)
        deadline = time.monotonic() + timeout_s
        self.write(job, f"Preparing the \"docker\" executor\nUsing Docker executor with image {image} ...\n")
        self.ensure_image(job, helper, None)
        self.ensure_image(job, image, image_platform)

        # get_sources in the helper (predefined) container
        strategy = job.variable("GIT_STRATEGY", "fetch")
        if strategy == "none":
            sources = 'echo "Skipping Git repository setup"; mkdir -p "$CI_PROJECT_DIR"'
        else:
            git = payload.get("git_info") or {}
            repo = str(git.get("repo_url", ""))
            clone_url = self.entry.get("clone_url")
            if clone_url:  # common/build_url_helper.go: the clone URL's scheme and host replace GitLab's
                parsed, base = requests.utils.urlparse(repo), requests.utils.urlparse(str(clone_url))
                repo = parsed._replace(scheme=base.scheme, netloc=f"{parsed.username}:{parsed.password}@{base.netloc}" if parsed.username else base.netloc).geturl()
            sources = (f'rm -rf "$CI_PROJECT_DIR" && git clone --depth {int(git.get("depth") or 20)} -b {git.get("ref", "main")} '
                       f'"{repo}" "$CI_PROJECT_DIR" && cd "$CI_PROJECT_DIR" && git checkout -q {git.get("sha", "HEAD")}')  # fmt: skip
        self.write(job, "Getting source from Git repository\n")
        code = self.run_container(job, helper, "set -e\n" + sources, "predefined", deadline)
        if code != 0:
            raise JobFailure("runner_system_failure", f"getting the sources failed (exit code {code})")

        lines, after = self.script_lines(job)
        self.write(job, "Executing \"step_script\" stage of the job script\n")
        code = self.run_container(job, image, "\n".join(lines), "build", deadline, **self.build_kwargs(image_platform))
        if after:
            self.write(job, "Running after_script\n")
            self.run_container(job, image, "\n".join(after), "build", deadline, **self.build_kwargs(image_platform))  # failure ignored, as in GitLab
        if code != 0:
            raise JobFailure("script_failure", f"exit code {code}", exit_code=code)

    def execute_shell(self, job: Job) -> None:
        deadline = time.monotonic() + float((job.payload.get("runner_info") or {}).get("timeout") or 3600)
        if job.variable("GIT_STRATEGY", "fetch") != "none":
            raise JobFailure("runner_system_failure", "this double's shell executor supports GIT_STRATEGY none only")
        lines, after = self.script_lines(job)
        self.write(job, "Preparing the \"shell\" executor\nExecuting \"step_script\" stage of the job script\n")
        code = self.run_local(job, "\n".join(lines), deadline)
        if after:
            self.run_local(job, "\n".join(after), deadline)
        if code != 0:
            raise JobFailure("script_failure", f"exit code {code}", exit_code=code)


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gitlab-runner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("-c", "--config", default=f"{CONFIG_DIR}/config.toml")
    run.add_argument("--working-directory", "-d", default=None)
    single = sub.add_parser("run-single")
    single.add_argument("-c", "--config", default=f"{CONFIG_DIR}/config.toml")
    single.add_argument("-r", "--runner", default="")
    single.add_argument("-u", "--url", default=os.environ.get("CI_SERVER_URL", ""))
    single.add_argument("-t", "--token", default=os.environ.get("CI_SERVER_TOKEN", ""))
    single.add_argument("--executor", default=os.environ.get("RUNNER_EXECUTOR", ""))
    single.add_argument("--max-builds", type=int, default=0)
    single.add_argument("--wait-timeout", type=int, default=0)
    sub.add_parser("--version")
    opts = parser.parse_args(argv)

    if opts.command == "run":
        config = load_config(opts.config)
        entries = config.get("runners") or []
        if not entries:
            fatal("no runners in config.toml")
        entry = entries[0]
        runner = Runner(entry, single=False,
                        shutdown_timeout_s=float(config.get("shutdown_timeout") or DEFAULT_SHUTDOWN_TIMEOUT_S),
                        check_interval_s=float(config.get("check_interval") or CHECK_INTERVAL_S))  # fmt: skip
        max_builds = 0
    else:
        # commands/single.go HandleArgs: config.toml only through --runner NAME.
        entry = {"url": opts.url, "token": opts.token, "executor": opts.executor}
        if opts.runner:
            config = load_config(opts.config)
            found = [r for r in config.get("runners") or [] if r.get("name") == opts.runner]
            if not found:
                fatal(f"Error loading runner by name: could not find a runner with the name '{opts.runner}'")
            entry = found[0]
        if not entry.get("url"):
            fatal("Missing URL")
        if not entry.get("token"):
            fatal("Missing Token")
        if not entry.get("executor"):
            fatal("Missing Executor")
        runner = Runner(entry, single=True, shutdown_timeout_s=DEFAULT_SHUTDOWN_TIMEOUT_S, check_interval_s=CHECK_INTERVAL_S)
        max_builds = opts.max_builds
    if entry.get("executor") not in ("docker", "shell"):
        fatal(f"this double implements the docker and shell executors only, not {entry.get('executor')!r}")
    signal.signal(signal.SIGQUIT, runner.on_quit)
    signal.signal(signal.SIGTERM, runner.on_term)
    signal.signal(signal.SIGINT, runner.on_term)
    return runner.serve(max_builds)


if __name__ == "__main__":
    sys.exit(main())
