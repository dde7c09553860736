"""gitlab-runner's side of a runner, whatever runs it: its config.toml, the short token it labels
its job containers and volumes with, and the timeouts it keeps on its own.

Runtime-neutral (pure: no Docker, no Kubernetes): the Docker runtime writes this config.toml into
the directory it mounts, a Kubernetes runtime into a Secret. Every key and value type written here
is one gitlab-runner v17.11.3 decodes (common/config.go, with BurntSushi/toml): the unit tests check
each variant against the gitlab-runner double's table of keys and types taken from that file, and
tests/real_runner/configcheck decodes every variant with BurntSushi/toml itself.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

from pydantic import SecretStr

from ..config import GITLAB_MIN_MAXIMUM_TIMEOUT_S, RunnerConfig, RunnerMode
from ..model import Gpu, GpuVendor, RunnerKind

__all__ = [
    "GITLAB_MIN_MAXIMUM_TIMEOUT_S", "JOB_OF_LABEL", "KILL_GRACE_S", "RUN_SINGLE_CHECK_INTERVAL_S",
    "RUN_SINGLE_NOT_HEALTHY_SLEEP_S", "RUN_SINGLE_SHUTDOWN_TIMEOUT_S", "ConfigSpec", "forceful_timeout_s",
    "go_duration", "kill_after_s", "platform_check_script", "render_config", "shutdown_timeout_s",
    "short_token_v17", "short_token_v18_2", "short_tokens",
]  # fmt: skip

# Set on job containers through [runners.docker] container_labels: the runner they belong to.
JOB_OF_LABEL = "io.autogit.job-of"

# GitLab refuses a runner whose maximum_timeout is under 10 minutes (GITLAB_MIN_MAXIMUM_TIMEOUT_S,
# app/models/ci/runner.rb: `validates :maximum_timeout ... greater_than_or_equal_to: 600`); the agent
# registers runners with maximum_timeout = runner.drain_timeout, which agent/config.py validates.

# `run-single` (one-job mode) keeps its own timings, whatever config.toml says (commands/single.go):
# its shutdownTimeout field has no flag the command line can set, so getShutdownTimeout() is always
# common.DefaultShutdownTimeout; a SIGQUIT only marks it finished and waits out the sleep it is in:
# common.CheckInterval after an empty answer, common.NotHealthyCheckInterval after a 403.
RUN_SINGLE_SHUTDOWN_TIMEOUT_S = 30  # common/consts.go DefaultShutdownTimeout
RUN_SINGLE_CHECK_INTERVAL_S = 3  # common/consts.go CheckInterval
RUN_SINGLE_NOT_HEALTHY_SLEEP_S = 300  # common/consts.go NotHealthyCheckInterval
# Past gitlab-runner's own forceful timeout, before the agent sends SIGKILL.
KILL_GRACE_S = 10.0

_UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/riscv64": "riscv64", "linux/arm/v7": "armv7l",
          "linux/ppc64le": "ppc64le", "linux/s390x": "s390x", "linux/386": "i686"}  # fmt: skip


# --- the short token ------------------------------------------------------------------------------
# gitlab-runner labels every job container and cache volume with `com.gitlab.gitlab-runner.runner.id
# = ShortenToken(token)` (executors/docker/internal/labels/labels.go) and names its cache volumes
# `runner-<short token>-...`. The short form changed in v18.2 (helpers/shorten_token.go), and GitLab
# now issues partitioned tokens (`glrt-t1_…`, `t2_`, `t3_` by runner type; app/models/ci/runner.rb
# prefix_for_new_and_legacy_runner) on which the two forms differ. Neither form is a secret: it
# cannot authenticate.

_HEX = frozenset("0123456789abcdefABCDEF")


def short_token_v17(token: str) -> str:
    """ShortenToken of gitlab-runner 17.x to 18.1 (helpers/shorten_token.go at v17.11.3): 9
    characters after glrt-/glrtr-/glcbt-, 17 of a GR1348941… registration token, else 8."""
    if len(token) < 8:
        return token
    for prefix in ("glrt-", "glrtr-", "glcbt-"):
        if token.startswith(prefix):
            return token[len(prefix) : len(prefix) + 9]
    if token.startswith("GR") and len(token) >= 17 and all(c in _HEX for c in token[2:9]):
        return token[:17]
    return token[:8]


# helpers/shorten_token.go at v18.2.0 … v19.3.0: each pattern, in order, is stripped from the start,
# then the first 9 characters are kept (`^` anchors every alternative, so one strip per pattern).
_PREFIXES_V18_2 = (
    re.compile(r"^glrt-(t[123]_)?|^t[123]_|^glrtr-"),
    re.compile(r"^glcbt-"),
    re.compile(r"^GR[0-9A-Fa-f]{7}"),
)


def short_token_v18_2(token: str) -> str:
    """ShortenToken of gitlab-runner ≥ 18.2 (helpers/shorten_token.go at v19.3.0)."""
    for pattern in _PREFIXES_V18_2:
        token = pattern.sub("", token, count=1)
    return token[:9]


def short_tokens(token: str) -> list[str]:
    """Every form a gitlab-runner this agent may run labels this token's leftovers with."""
    forms = [short_token_v17(token), short_token_v18_2(token)]
    return sorted(set(forms), key=forms.index)


# --- values as gitlab-runner decodes them -------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """A duration Go's time.ParseDuration reads (a `*time.Duration` key; BurntSushi/toml parses
    strings with it): whole seconds or milliseconds, never Python's `1e+06s`."""
    ms = max(1, round(seconds * 1000)) if seconds > 0 else 0
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def shutdown_timeout_s(force_timeout: float) -> int:
    """config.toml's shutdown_timeout is an int of seconds, and 0 means the default, 30 s
    (common/config.go GetShutdownTimeout): round up, never to 0."""
    return max(1, math.ceil(force_timeout))


def forceful_timeout_s(config: RunnerConfig) -> int:
    """How long gitlab-runner itself may take to abort a job after SIGTERM: `run` reads
    shutdown_timeout; `run-single` always takes 30 s (commands/single.go getShutdownTimeout)."""
    if config.mode is RunnerMode.ONE_JOB:
        return RUN_SINGLE_SHUTDOWN_TIMEOUT_S
    return shutdown_timeout_s(config.force_timeout)


def kill_after_s(config: RunnerConfig) -> float:
    """Seconds after SIGTERM before the agent may SIGKILL a runner: its own forceful timeout has
    run out, with a margin."""
    return forceful_timeout_s(config) + KILL_GRACE_S


def platform_check_script(platform: str) -> str:
    """pre_build_script of an emulated runner. gitlab-runner has no runner-level platform
    (common/config.go): a job that does not ask for one in `image: docker: platform:` runs the
    image's native code, which would pass an arm64 job on amd64. The job fails instead, and says
    how to ask."""
    machine = _UNAME.get(platform, platform.rsplit("/", 1)[-1])
    return (
        f'if [ "$(uname -m)" != "{machine}" ]; then echo "ERROR: this job is tagged for {platform} but runs on '
        f'$(uname -m): ask for the platform in .gitlab-ci.yml: image: {{name: <image>, docker: {{platform: {platform}}}}}" >&2; '
        "exit 1; fi"
    )


class ConfigSpec(Protocol):
    """What config.toml needs of a runner (the runtimes' RunnerSpec has it)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def token(self) -> SecretStr: ...
    @property
    def kind(self) -> RunnerKind: ...
    @property
    def platform(self) -> str: ...
    @property
    def gpu(self) -> Gpu | None: ...
    @property
    def cpus(self) -> float: ...
    @property
    def memory_mb(self) -> int: ...
    @property
    def clone_url(self) -> str | None: ...


def render_config(config: RunnerConfig, spec: ConfigSpec, *, gpu_devices: list[str], gpu_groups: list[str]) -> dict[str, Any]:
    """gitlab-runner's config.toml for one runner. `gpu_devices`/`gpu_groups`: the host paths and
    group ids an AMD or Intel GPU needs (the runtime knows where /dev is)."""
    docker_table: dict[str, Any] = {
        "image": config.job_image,
        "privileged": config.privileged_jobs,
        "volumes": ["/cache"],
        "pull_policy": [config.pull_policy],
        # Job containers carry the runner's name so that what a killed runner left behind can
        # be found and removed (gitlab-runner adds its own com.gitlab.gitlab-runner.* labels).
        "container_labels": {JOB_OF_LABEL: spec.name},
    }
    if spec.cpus:
        docker_table["cpus"] = f"{spec.cpus:g}"  # DockerConfig.CPUS is a string
    if spec.memory_mb:
        docker_table["memory"] = f"{spec.memory_mb}m"
    if config.helper_image:
        docker_table["helper_image"] = config.helper_image
    if config.network:
        # runner.network puts the manager container on a network; job containers (and their
        # helper, which clones) are created by gitlab-runner and need it said again.
        docker_table["network_mode"] = config.network
    gpu = spec.gpu
    if gpu is not None:
        # Exactly the allocated GPU, and nothing else of /dev (ADR-004).
        if gpu.vendor is GpuVendor.NVIDIA:
            # gitlab-runner parses `gpus` like `docker run --gpus`; `devices` entries are host
            # paths to it (executors/docker/docker.go parseDeviceString), so a CDI name there
            # fails the job. CDI is only used where the agent itself creates the container.
            docker_table["gpus"] = f"device={gpu.id}"
        else:
            docker_table["devices"] = list(gpu_devices)
            docker_table["group_add"] = list(gpu_groups)
    runner: dict[str, Any] = {
        "name": spec.name,
        "url": spec.url,
        "token": spec.token.get_secret_value(),
        "executor": config.executor,
        "limit": 1,
        "request_concurrency": 1,
        # After unhealthy_requests_limit (3) requests answered 403 in a row gitlab-runner stops
        # asking for unhealthy_interval, 60 min by default (common/consts.go, network/gitlab.go
        # RequestJob, commands/health_helper.go): a token refused for a while (a runner deleted
        # and restored, a token rotated back) would strand jobs that long.
        "unhealthy_interval": go_duration(config.unhealthy_interval),
    }
    if spec.clone_url:
        runner["clone_url"] = spec.clone_url
    if spec.kind is RunnerKind.EMULATED:
        runner["pre_build_script"] = platform_check_script(spec.platform)
    runner["docker"] = docker_table
    return {
        "concurrent": 1,
        "check_interval": config.check_interval,
        # gitlab-runner's *forceful* shutdown timeout (SIGTERM), not the drain deadline.
        "shutdown_timeout": shutdown_timeout_s(config.force_timeout),
        "log_level": "info",
        "runners": [runner],
    }
