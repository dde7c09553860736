#!/usr/bin/python3
"""AutoGit's gitlab-runner DOUBLE: the entry point of the test image ``autogit-test/runner:<hash>``.

This is not GitLab Runner. The real one cannot be built here: the Go module proxy refuses
gitlab-runner v17.11.3 and ten of its gitlab.com dependencies (docs/runners/real-runner.md). So
this double behaves as gitlab-runner v17.11.3 (commit 3995fbff) does wherever AutoGit depends on
it, or as v19.3.0 (commit 9cbf0074) with GITLAB_RUNNER_DOUBLE_VERSION=19.3.0 where the two
differ, and is at least as strict. Each rule names the gitlab-runner source file it comes from:

- command line (commands/single.go, commands/multi.go): ``run --config F``; ``run-single`` reads
  config.toml only for ``--runner NAME`` (HandleArgs) and otherwise wants ``--url``: "Missing URL";
  run-single ignores the global check_interval and shutdown_timeout (its forceful timeout is always
  30 s) and polls every 3 s (common.CheckInterval), sleeping 300 s (common.NotHealthyCheckInterval)
  after an unhealthy request; ``--version`` prints common/version.go's Extended() block;
- config.toml (common/config.go): every key and its Go type come from config_types.tsv (extracted
  from config.go at the pinned commit); a value BurntSushi/toml would not decode into that type
  refuses to start, as in gitlab-runner; an unknown key refuses to start too (the real runner only
  logs it: stricter is allowed, lenient is not);
- signals (commands/multi.go, commands/single.go waitForInterrupts): SIGQUIT = graceful (no new
  job, the current one finishes, no time limit; more SIGQUITs change nothing; run-single waits
  out the sleep it is in); SIGTERM/SIGINT = forceful: the job is aborted and its containers
  removed within the global ``shutdown_timeout`` (default 30 s, common/consts.go
  DefaultShutdownTimeout), after which the process exits anyway; any signal during the forceful
  shutdown exits at once, cleaning nothing; SIGKILL leaves everything behind, as with the real one;
- health (network/gitlab.go RequestJob, commands/health_helper.go): only a 403 to a job request is
  unhealthy (a request that fails, doJSON's -1, and a 5xx are not); after
  ``unhealthy_requests_limit`` (3) in a row the runner stops asking for ``unhealthy_interval``
  (default 60 min);
- cancel (network/trace.go): a trace update or the 30 s touch of a silent job answered 403 with
  Job-Status canceled aborts that job only;
- the docker executor (executors/docker/): per job a cache volume for each non-bind entry of
  ``volumes`` and for the builds dir (``runner-<short token>-project-<id>-concurrent-0-cache-<md5>``,
  common/build.go, internal/volumes/manager.go), a helper container (type ``predefined``) from
  ``helper_image`` that gets the sources (from ``clone_url`` joined with the project path,
  common/build_url_helper.go), and a build container (type ``build``) from the job's image; both
  get the same host settings (docker.go createHostConfig: ``devices`` as host paths,
  parseDeviceString; ``gpus`` parsed like ``docker run --gpus``; ``network_mode``, cpus, memory,
  groups, privileged) and ``container_labels`` over gitlab-runner's ``com.gitlab.gitlab-runner.*``
  labels (internal/labels/labels.go; runner.id is helpers/shorten_token.go's short token of the
  version claimed); a job's platform (``image.executor_opts.docker.platform``) finds its local
  image as the version claimed does (platform_aware_lookup) and the build container runs as the
  image's own platform (docker.go platformForImage); the helper stays native;
  ``pull_policy`` (default ``always``) decides pulls, and with no ``helper_image`` the helper is
  registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v<version>
  (helpers/container/helperimage/info.go), which this machine cannot pull;
- ``pre_build_script`` runs in the build container before the script (common/build.go); the
  job's containers are removed after the job, its cache volumes are kept;
- the kubernetes executor (executors/kubernetes/): each job a pod created through the API from
  ``[runners.kubernetes]``, then deleted: kubernetes_executor.py beside this file, with its rules;
- TLS (network/client.go): the CA of <host> is /etc/gitlab-runner/certs/<host>.crt;
- the job protocol (network/gitlab.go): POST /api/v4/jobs/request, PATCH /api/v4/jobs/:id/trace with
  Content-Range, PUT /api/v4/jobs/:id with state, failure_reason, exit_code and output checksum.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import os
import platform
import posixpath
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


def _unready(signum: int, _frame: object) -> None:
    """A stop signal before main() installs its handlers ends the process, as one no
    signal.Notify asked for ends a Go program (runtime/signal_unix.go: SIGQUIT dumps the goroutines
    and exits 2; SIGTERM and SIGINT kill it). As PID 1 in its container the double would otherwise
    ignore it (the kernel drops a default-action signal to PID 1) and never stop."""
    os._exit(2 if signum == signal.SIGQUIT else 128 + signum)


for _sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _unready)

import docker  # noqa: E402 - after the handlers above: importing takes a while
import docker.errors  # noqa: E402
import docker.types  # noqa: E402
import requests  # noqa: E402

# The version this double claims, and whose behaviour it follows where versions differ (set it
# with GITLAB_RUNNER_DOUBLE_VERSION; build.sh makes an image of each): 17.11.3, the default
# image's, or 19.3.0. Both were read (tags v17.11.3 and v19.3.0 of gitlab-runner).
REVISIONS = {"17.11.3": "3995fbff", "19.3.0": "9cbf0074"}
BRANCHES = {"17.11.3": "17-11-stable", "19.3.0": "19-3-stable"}
GO_VERSIONS = {"17.11.3": "go1.23.6", "19.3.0": "go1.26.5"}  # their go.mod's go line
BUILT = {"17.11.3": "2025-06-11T18:21:06+0000", "19.3.0": "2026-08-19T08:58:54+0000"}  # the tags' commit times
VERSION = os.environ.get("GITLAB_RUNNER_DOUBLE_VERSION", "17.11.3")
if VERSION not in REVISIONS:
    print(f"gitlab-runner double: GITLAB_RUNNER_DOUBLE_VERSION={VERSION!r} is not one of {', '.join(REVISIONS)}", file=sys.stderr)
    sys.exit(2)
REVISION = REVISIONS[VERSION]
CONFIG_DIR = "/etc/gitlab-runner"
DEFAULT_HELPER_IMAGE = f"registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v{VERSION}"
CHECK_INTERVAL_S = 3.0  # common.CheckInterval
NOT_HEALTHY_CHECK_INTERVAL_S = 300.0  # common.NotHealthyCheckInterval (run-single)
TRACE_FORCE_SEND_S = 30.0  # common.MinTraceForceSendInterval: a silent job is touched this often
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0  # common.DefaultShutdownTimeout
DEFAULT_UNHEALTHY_LIMIT = 3  # common.DefaultUnhealthyRequestsLimit
DEFAULT_UNHEALTHY_INTERVAL_S = 3600.0  # common.DefaultUnhealthyInterval
# v19.3.0 looks a job's image up by its platform only where dockerd speaks API 1.49 or later
# (executors/docker/internal/pull/manager.go minPlatformAwareInspectAPIVersion).
PLATFORM_AWARE_INSPECT_API = (1, 49)
LABEL = "com.gitlab.gitlab-runner"
BUILDS_DIR = "/builds"
PULL_POLICIES = ("always", "if-not-present", "never")  # common/config.go DockerPullPolicy


def _config_types() -> dict[str, dict[str, str]]:
    """config_types.tsv: every table, key and Go type of gitlab-runner v17.11.3's config.toml
    (common/config.go, helpers/docker/credentials.go; tests/real_runner/extract_config_table.py
    wrote it). Beside this file in the repository, in /usr/share/gitlab-runner-double in the image."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "config_types.tsv"), "/usr/share/gitlab-runner-double/config_types.tsv"):
        if os.path.exists(path):
            tables: dict[str, dict[str, str]] = {}
            with open(path) as fh:
                for line in fh:
                    if line.strip() and not line.startswith("#"):
                        table, key, go_type = line.rstrip("\n").split("\t")
                        tables.setdefault(table, {})[key] = go_type
            return tables
    raise SystemExit("gitlab-runner double: config_types.tsv is missing")


CONFIG_TYPES = _config_types()
CONFIG_KEYS = frozenset(CONFIG_TYPES["config"])
RUNNER_KEYS = frozenset(CONFIG_TYPES["runners"])
DOCKER_KEYS = frozenset(CONFIG_TYPES["runners.docker"])
CACHE_KEYS = frozenset(CONFIG_TYPES["runners.cache"])
# time.ParseDuration's grammar (Go's time/format.go): "0", or signed decimal numbers each with a unit.
_GO_DURATION = re.compile(r"^[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$")
_GO_UNIT_S = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def log(message: str) -> None:
    print(f"gitlab-runner (AutoGit double of {VERSION}): {message}", file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """logrus.Fatalln: the message, exit status 1."""
    log(f"FATAL: {message}")
    sys.exit(1)


class ConfigProblem(ValueError):
    pass


def go_duration_s(value: Any, where: str) -> float:
    """A time.Duration in config.toml as BurntSushi/toml decodes it (decode.go unifyInt): a string
    time.ParseDuration accepts ("15s", "1h30m", never "1e+06s"), or an integer of nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1e-9
    if isinstance(value, str) and _GO_DURATION.match(value):
        sign = -1.0 if value.startswith("-") else 1.0
        return sign * sum(float(n) * _GO_UNIT_S[u] for n, u in re.findall(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", value))
    raise ConfigProblem(f"{where}: {value!r} is not a duration time.ParseDuration reads (e.g. \"15s\")")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_type(value: Any, go_type: str, where: str) -> None:
    """Refuse what BurntSushi/toml v1.4.0 (gitlab-runner v17.11.3's go.mod) refuses to decode into
    a field of this Go type: gitlab-runner then exits "decoding configuration file" (common/config.go
    LoadConfig). A pointer decodes as what it points to."""
    bare = go_type.lstrip("*")
    ok: bool
    if bare == "string":
        ok = isinstance(value, str)
    elif bare == "bool":
        ok = isinstance(value, bool)
    elif bare in ("int", "int64"):
        ok = _is_int(value)
    elif bare == "time.Duration":
        go_duration_s(value, where)
        ok = True
    elif bare == "time.Time":  # a TOML datetime, or text time.Time's UnmarshalText reads (RFC 3339)
        ok = isinstance(value, datetime.datetime) or (isinstance(value, str) and bool(_RFC3339.match(value)))
    elif bare == "StringOrArray":  # common/config.go StringOrArray.UnmarshalTOML
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    elif bare.startswith("[]"):
        inner = bare[2:]
        if not isinstance(value, list):
            ok = False
        else:
            for i, item in enumerate(value):
                check_type(item, inner, f"{where}[{i}]")
            ok = True
    elif bare.startswith("map[string]"):
        inner = bare[len("map[string]") :]
        if not isinstance(value, dict):
            ok = False
        else:
            for key, item in value.items():
                check_type(item, inner, f"{where}.{key}")
            ok = True
    else:  # a struct: a TOML table
        ok = isinstance(value, dict)
    if not ok:
        raise ConfigProblem(f"{where}: {value!r} does not decode into Go {go_type} (common/config.go)")


def _check_table(table: dict[str, Any], path: str, where: str) -> None:
    """Every key of a table this double models: one of gitlab-runner's own, of its type. An unknown
    key is refused: the real runner decodes config.toml without looking at undecoded keys and only
    logs what its best-effort schema check finds (commands/config.go loadConfig, common.Validate),
    so refusing is stricter, never more lenient."""
    types = CONFIG_TYPES[path]
    for key, value in table.items():
        if key not in types:
            raise ConfigProblem(f"{where}.{key}: not a gitlab-runner {VERSION} config key (common/config.go)")
        check_type(value, types[key], f"{where}.{key}")
        sub = f"{path}.{key}" if path != "config" else key
        if sub in CONFIG_TYPES:
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                _check_table(item, sub, f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else ""))


def validate(config: dict[str, Any]) -> None:
    _check_table(config, "config", "config")
    for i, runner in enumerate(config.get("runners", [])):
        where = f"runners[{i}]"
        table = runner.get("docker") or {}
        policy = table.get("pull_policy", [])
        for p in [policy] if isinstance(policy, str) else policy:
            if p not in PULL_POLICIES:
                raise ConfigProblem(f"{where}.docker.pull_policy: {p!r} is not one of {', '.join(PULL_POLICIES)}")
        for device in table.get("devices", []):
            if device.count(":") > 2:
                raise ConfigProblem(f"{where}.docker.devices: {device!r}: too many colons")


def load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
        validate(config)
    except (OSError, tomllib.TOMLDecodeError, ConfigProblem) as exc:
        fatal(f"Error loading config: {type(exc).__name__}: {exc}")
    return config


def short_token(token: str, version: str = "") -> str:
    """helpers/shorten_token.go ShortenToken of the version claimed: 17.x keeps 9 characters
    after glrt-/glrtr-/glcbt- (17 of a GR… token, else 8); from 18.2 the prefixes glrt-, the
    partition prefixes t1_/t2_/t3_, glrtr-, glcbt- and GR+7 hex digits are stripped, then 9 kept."""
    if (version or VERSION).startswith("17."):
        if len(token) < 8:
            return token
        for prefix in ("glrt-", "glrtr-", "glcbt-"):
            if token.startswith(prefix):
                return token[len(prefix) : len(prefix) + 9]
        if token.startswith("GR") and len(token) >= 17 and all(c in "0123456789abcdefABCDEF" for c in token[2:9]):
            return token[:17]
        return token[:8]
    for pattern in (r"^glrt-(t[123]_)?|^t[123]_|^glrtr-", r"^glcbt-", r"^GR[0-9A-Fa-f]{7}"):
        token = re.sub(pattern, "", token, count=1)
    return token[:9]


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
    # GitLab answered a trace update with 403 and Job-Status canceled: this job alone is aborted
    # (network/trace.go cancels the job's context, never the runner's).
    canceled: threading.Event = field(default_factory=threading.Event)

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


class Canceled(Exception):
    """GitLab canceled the job while it ran."""


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
        self.wake = threading.Event()  # ends a sleep early
        self.failures = 0
        self.last_update = ""
        self._docker: docker.DockerClient | None = None
        self.current: list[str] = []  # containers of the running job

    # --- signals -----------------------------------------------------------------------------
    def forced_exit(self, signum: int) -> None:
        """A signal during the forceful shutdown exits at once, cleaning nothing (commands/multi.go
        handleForcefulShutdown: "forced exit with stop signal"; commands/single.go
        waitForInterrupts: logrus.Fatalln("forced exit:"))."""
        log(f"FATAL: forced exit: {signal.Signals(signum).name}")
        os._exit(1)

    def on_quit(self, signum: int, *_: object) -> None:
        if self.aborting.is_set():
            self.forced_exit(signum)
        log("Requested quit, waiting for builds to finish")
        self.draining.set()
        # `run` stops feeding its workers at once (commands/multi.go feedRunners); `run-single` only
        # marks itself finished and waits out the sleep it is in, 3 s or 300 s after a 403: only
        # abortSignal, fed after SIGTERM, ends it (commands/single.go processBuild).
        if not self.single:
            self.wake.set()

    def on_term(self, signum: int, *_: object) -> None:
        if self.aborting.is_set():
            self.forced_exit(signum)
        log(f"Requested exit: {signal.Signals(signum).name}; forceful shutdown (timeout {self.shutdown_timeout_s:g} s)")
        self.aborting.set()
        self.draining.set()
        self.wake.set()
        # The forceful shutdown is bounded: past it the process exits whatever is left.
        def give_up() -> None:
            log("FATAL: shutdown timed out")
            os._exit(1)

        timer = threading.Timer(self.shutdown_timeout_s, give_up)
        timer.daemon = True
        timer.start()

    # --- the loop ----------------------------------------------------------------------------
    def serve(self, max_builds: int) -> int:
        log(f"Starting runner for {self.url} with token {short_token(self.token)} ... (executor {self.entry.get('executor')})")
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
                "executor": str(self.entry.get("executor") or "docker"), "shell": "bash",
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
            # network/client.go doJSON answers -1 when the request fails (refused, timeout): not
            # clientError, so RequestJob's default case keeps the runner healthy.
            log(f"Checking for jobs... error: {type(exc).__name__}")
            return None, True
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

    def touch_job(self, job: Job) -> None:
        try:
            resp = self.session.put(f"{self.url}/api/v4/jobs/{job.id}", timeout=30, json={
                "token": job.token, "state": "running",
                "output": {"checksum": f"crc32:{zlib.crc32(bytes(job.trace)) & 0xFFFFFFFF:08x}", "bytesize": len(job.trace)}})  # fmt: skip
        except requests.RequestException:
            return
        if resp.status_code == 403 and resp.headers.get("Job-Status") in ("canceled", "canceling"):
            job.canceled.set()

    def patch_trace(self, job: Job) -> bool:
        """Send what the trace has that GitLab has not; whether there was anything to send."""
        data = bytes(job.trace[job.sent :])
        if not data:
            return False
        start = job.sent
        try:
            resp = self.session.patch(
                f"{self.url}/api/v4/jobs/{job.id}/trace", data=data, timeout=30,
                headers={"Job-Token": job.token, "Content-Type": "text/plain", "Content-Range": f"{start}-{start + len(data) - 1}"},
            )  # fmt: skip
        except requests.RequestException:
            return True  # resent from the same offset next time
        if resp.status_code == 202:
            job.sent = start + len(data)
        elif resp.status_code == 416:  # GitLab says where it is
            m = re.match(r"0-(\d+)", resp.headers.get("Range", ""))
            if m:
                job.sent = int(m.group(1))
        elif resp.status_code == 403 and resp.headers.get("Job-Status") in ("canceled", "canceling"):
            job.canceled.set()  # that job is aborted at once; the runner goes on
        return True

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
            touched = time.monotonic()
            while not stop_flush.wait(1.0):
                if self.patch_trace(job):
                    touched = time.monotonic()
                elif time.monotonic() - touched > TRACE_FORCE_SEND_S:
                    self.touch_job(job)  # network/trace.go touchJob: how a silent job learns it was canceled
                    touched = time.monotonic()

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
        except Canceled:
            state, reason = "failed", "job_canceled"
            self.write(job, "ERROR: Job failed: canceled\n")
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

    def ensure_image(self, job: Job, name: str, image_platform: str | None) -> str | None:
        """pull_policy, in order (executors/docker/internal/pull/manager.go): `never` takes only a
        local image, `if-not-present` pulls when none is local, `always` pulls every time.

        Returns the platform the container is created for: the found image's own (docker.go
        platformForImage, both versions) when the job asks for one. Which local image is found
        follows the version claimed (platform_aware_lookup): 17.11.3 takes the local tag whatever
        its architecture, so an amd64 image asked for as linux/arm64 runs amd64 code; 19.3.0 asks
        dockerd for the tag on that platform where dockerd can (API >= 1.49), and an image of
        another platform is then not found."""
        policy = self.docker_table.get("pull_policy") or ["always"]
        policies = [policy] if isinstance(policy, str) else list(policy)
        client = self.docker_client()
        errors = []
        aware = bool(image_platform) and platform_aware_lookup(VERSION, self.daemon_api())
        for p in policies:
            if p in ("never", "if-not-present"):
                try:
                    image = client.images.get(name)
                    own = f"{image.attrs.get('Os', 'linux')}/{image.attrs.get('Architecture')}"
                    if aware and own != image_platform:
                        # a single-platform local image: dockerd's platform-aware inspect finds none
                        raise docker.errors.ImageNotFound(f"No such image: {name} for platform {image_platform}")
                    self.write(job, f"Using locally found image version due to \"{p}\" pull policy\nUsing docker image {name} ({own})\n")
                    return own if image_platform else None
                except docker.errors.ImageNotFound as exc:
                    if p == "never":
                        errors.append(f"{exc}: not found locally and pull_policy is never")
                        continue
            try:
                self.write(job, f"Pulling docker image {name}{' for platform ' + image_platform if image_platform else ''} ...\n")
                pulled = client.images.pull(name, platform=image_platform)
                return f"{pulled.attrs.get('Os', 'linux')}/{pulled.attrs.get('Architecture')}" if image_platform else None
            except docker.errors.DockerException as exc:
                errors.append(f"pulling {name}: {str(exc).splitlines()[0][:200]}")
        raise JobFailure("image_pull_failure", "; ".join(errors))

    def daemon_api(self) -> tuple[int, int]:
        major, _, minor = str(self.docker_client().version().get("ApiVersion", "1.0")).partition(".")
        return int(major), int(minor or 0)

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
        # every container gets container_labels (executors/docker/docker.go prepareContainerLabels)
        labels = self.labels(job, kind)
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
            if job.canceled.is_set():
                container.kill()
                raise Canceled()
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
        builds = str(self.entry.get("builds_dir") or BUILDS_DIR)  # RunnerSettings.BuildsDir
        project_dir = f"{builds}/{job.id}"
        os.makedirs(project_dir, exist_ok=True)
        env.update({"CI_PROJECT_DIR": project_dir, "CI_BUILDS_DIR": builds})
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
                if self.aborting.is_set() or job.canceled.is_set() or time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if self.aborting.is_set():
                        raise Aborted()
                    if job.canceled.is_set():
                        raise Canceled()
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

    def sources_script(self, job: Job) -> str:
        """get_sources, as the helper runs it: nothing with GIT_STRATEGY none, else a shallow
        clone of the job's ref checked out at its sha (either executor)."""
        if job.variable("GIT_STRATEGY", "fetch") == "none":
            return 'echo "Skipping Git repository setup"; mkdir -p "$CI_PROJECT_DIR"'
        git = job.payload.get("git_info") or {}
        repo = remote_url(self.entry.get("clone_url"), str(git.get("repo_url", "")), job.variable("CI_PROJECT_PATH"), job.token)
        return (f'rm -rf "$CI_PROJECT_DIR" && git clone --depth {int(git.get("depth") or 20)} -b {git.get("ref", "main")} '
                f'{shell_quote(repo)} "$CI_PROJECT_DIR" && cd "$CI_PROJECT_DIR" && git checkout -q {git.get("sha", "HEAD")}')  # fmt: skip

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
        if self.entry.get("executor") == "kubernetes":
            return self.execute_kubernetes(job)
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
        self.ensure_image(job, helper, None)  # the helper stays native (docker.go createContainer)
        create_platform = self.ensure_image(job, image, image_platform)

        # get_sources in the helper (predefined) container
        sources = self.sources_script(job)
        self.write(job, "Getting source from Git repository\n")
        # the helper gets the same host settings as the build container (docker.go createHostConfig),
        # on its native platform
        code = self.run_container(job, helper, "set -e\n" + sources, "predefined", deadline, **self.build_kwargs(None))
        if code != 0:
            raise JobFailure("runner_system_failure", f"getting the sources failed (exit code {code})")

        lines, after = self.script_lines(job)
        self.write(job, "Executing \"step_script\" stage of the job script\n")
        code = self.run_container(job, image, "\n".join(lines), "build", deadline, **self.build_kwargs(create_platform))
        if after:
            self.write(job, "Running after_script\n")
            self.run_container(job, image, "\n".join(after), "build", deadline, **self.build_kwargs(create_platform))  # failure ignored, as in GitLab
        if code != 0:
            raise JobFailure("script_failure", f"exit code {code}", exit_code=code)

    def execute_kubernetes(self, job: Job) -> None:
        """The job as a job pod (kubernetes_executor.py), deleted after the job."""
        kx = kubernetes_executor()
        payload = job.payload
        deadline = time.monotonic() + float((payload.get("runner_info") or {}).get("timeout") or 3600)
        project_dir = f"{kx.BUILDS_DIR}/{job.variable('CI_PROJECT_PATH', 'project')}"
        variables = [(str(v["key"]), str(v.get("value") or "")) for v in payload.get("variables") or []]
        variables += [("CI_PROJECT_DIR", project_dir), ("CI_BUILDS_DIR", kx.BUILDS_DIR)]
        exports = "\n".join(f"export {k}={shell_quote(v)}" for k, v in variables if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k))
        lines, after = self.script_lines(job)
        scripts = kx.stage_scripts(exports, self.sources_script(job), "\n".join(lines), "\n".join(after))
        try:
            built = kx.job_pod(self.entry, payload, short_token=short_token(self.token), version=VERSION, scripts=scripts)
        except kx.ExecutorProblem as exc:
            raise JobFailure("runner_system_failure", str(exc)) from None
        self.write(job, f"Preparing the \"kubernetes\" executor\nUsing Kubernetes namespace: {built.pod['metadata']['namespace']}\n")
        for warning in built.warnings:
            self.write(job, f"WARNING: {warning}\n")

        def stop() -> str | None:
            return "aborted" if self.aborting.is_set() else "canceled" if job.canceled.is_set() else None

        try:
            code = asyncio.run(kx.run_job_pod(self.entry, built, write=lambda text: self.write(job, text), stop=stop, deadline=deadline))
        except kx.ExecutorProblem as exc:
            raise JobFailure("runner_system_failure", str(exc)) from None
        except kx.PodFailure as exc:
            if exc.reason == "aborted":
                raise Aborted() from None
            if exc.reason == "canceled":
                raise Canceled() from None
            raise JobFailure(exc.reason, str(exc), exc.exit_code) from None
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


def kubernetes_executor() -> Any:
    """kubernetes_executor.py beside this file (it needs kubernetes_asyncio, which only the image
    of the Kubernetes manager pod has: imported when a runner uses that executor)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import kubernetes_executor as module

    return module


def platform_aware_lookup(version: str, api: tuple[int, int]) -> bool:
    """Whether the claimed gitlab-runner looks a job's local image up by the job's platform:
    17.11.3 inspects the tag alone (pull/manager.go getImageUsingPullPolicy, ImageInspectWithRaw
    without a platform); 19.3.0 passes the platform where dockerd's API is 1.49 or later and falls
    back to the tag alone below (pull/manager.go inspectOptions, minPlatformAwareInspectAPIVersion)."""
    return not version.startswith("17.") and api >= PLATFORM_AWARE_INSPECT_API


def remote_url(clone_url: str | None, repo_url: str, project_path: str, job_token: str) -> str:
    """The URL the helper clones from (common/build_url_helper.go GetRemoteURL): GitLab's repo_url;
    with clone_url, that URL with CI_PROJECT_PATH.git joined to its path, so a relative URL root
    (https://host/gitlab) is kept, and gitlab-ci-token:<job token> as its credentials."""
    base = requests.utils.urlparse(clone_url or "")
    if not clone_url or not base.scheme:
        return repo_url
    path = posixpath.join(base.path or "/", project_path + ".git")
    host = base.hostname or ""
    netloc = f"gitlab-ci-token:{job_token}@{host}" + (f":{base.port}" if base.port else "")
    return base._replace(netloc=netloc, path=path).geturl()


def version_text() -> str:
    """What `gitlab-runner --version` prints (main.go cli.VersionPrinter = common/version.go
    AppVersionInfo.Printer, Extended()), for the version claimed."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return (f"Version:      {VERSION}\nGit revision: {REVISION}\nGit branch:   {BRANCHES[VERSION]}\n"
            f"GO version:   {GO_VERSIONS[VERSION]}\nBuilt:        {BUILT[VERSION]}\nOS/Arch:      linux/{arch}")  # fmt: skip


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] in (["--version"], ["-v"]):  # urfave/cli's version flag, before any command
        print(version_text())
        return 0
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
    if entry.get("executor") not in ("docker", "shell", "kubernetes"):
        fatal(f"this double implements the docker, shell and kubernetes executors only, not {entry.get('executor')!r}")
    signal.signal(signal.SIGQUIT, runner.on_quit)
    signal.signal(signal.SIGTERM, runner.on_term)
    signal.signal(signal.SIGINT, runner.on_term)
    return runner.serve(max_builds)


if __name__ == "__main__":
    sys.exit(main())
