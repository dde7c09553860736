"""The agent's configuration: /etc/autogit/agent.yaml, validated by pydantic models.

Unknown keys are errors, so a typo never silently falls back to a default. Secrets never come
from the YAML: the GitLab token and the webhook secret come from systemd credentials
($CREDENTIALS_DIRECTORY/gitlab-token, .../webhook-secret) or else from the environment
(AUTOGIT_GITLAB_TOKEN, AUTOGIT_WEBHOOK_SECRET), which loses them once read. docs/configuration/ is generated
from these models (`autogit-agent config-docs`), so it cannot drift from them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from . import secret_env
from .listen import parse_listen
from .model import Frozen, Policy

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AgentConfig",
    "ApiConfig",
    "ConfigError",
    "GitLabConfig",
    "GitLabScope",
    "GpuConfig",
    "LeaderElectionConfig",
    "RunnerConfig",
    "FleetConfig",
    "RunnerMode",
    "Secrets",
    "WebhookConfig",
    "load_config",
    "load_secrets",
    "parse_config",
    "weak_webhook_secret",
]

DEFAULT_CONFIG_PATH = Path("/etc/autogit/agent.yaml")
# gitlab-runner's official image, pinned: a moving tag would change runners under the agent.
DEFAULT_RUNNER_IMAGE = "gitlab/gitlab-runner:alpine-v17.11.3"
# GitLab's least maximum_timeout of a runner (app/models/ci/runner.rb); runner_config.py re-exports it.
GITLAB_MIN_MAXIMUM_TIMEOUT_S = 600


class ConfigError(ValueError):
    """An unusable config. `lines` holds one `field.path: message` per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class GitLabScope(Frozen):
    """Where the agent looks for pending jobs and registers its runners."""

    kind: Literal["instance", "groups", "projects"] = Field(
        "instance",
        description="instance: every project (needs an admin token; GraphQL); groups: the "
        "projects of these groups; projects: these projects.",
    )
    groups: list[PositiveInt] = Field(default_factory=list, description="Group ids (kind=groups).")
    projects: list[PositiveInt] = Field(default_factory=list, description="Project ids (kind=projects).")
    include_shared: bool = Field(
        False,
        description="kind=groups: also serve projects of other namespaces shared with these groups. Group "
        "runners never reach those; it needs a token that may register runners there.",
    )

    @model_validator(mode="after")
    def _ids_match_kind(self) -> GitLabScope:
        if self.kind == "groups" and not self.groups:
            raise ValueError("kind 'groups' needs at least one id in groups")
        if self.kind == "projects" and not self.projects:
            raise ValueError("kind 'projects' needs at least one id in projects")
        return self


def _url_without_secrets(url: AnyHttpUrl | None) -> AnyHttpUrl | None:
    """A URL is printed in status lines, events and runners' config: credentials or a query in it
    would travel with it (secrets come from credentials or the environment only)."""
    if url is not None and (url.username or url.password or url.query):
        raise ValueError("must not carry a user, password or query (a token goes in the gitlab-token credential, never in a URL)")
    return url


class GitLabConfig(Frozen):
    url: AnyHttpUrl | None = Field(
        None, description="GitLab base URL, e.g. https://gitlab.example.com. Unset: detect-only mode."
    )
    _url_secrets = field_validator("url")(_url_without_secrets)
    scope: GitLabScope = Field(default_factory=GitLabScope)
    poll_interval: PositiveFloat = Field(10.0, description="Seconds between queue polls (the safety net for webhooks).")
    request_timeout: PositiveFloat = Field(10.0, description="Seconds before one GitLab API call gives up.")
    max_retries: int = Field(3, ge=0, le=10, description="Retries of a call that got 429 or 5xx, with backoff.")
    runner_type: Literal["instance_type", "group_type", "project_type"] | None = Field(
        None, description="Type of the runners the agent registers; default follows scope.kind."
    )
    verify_tls: bool = Field(True, description="Verify GitLab's TLS certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for a private GitLab CA.")


class WebhookConfig(Frozen):
    enabled: bool = Field(False, description="Listen for GitLab 'Job Hook' events to scale up at once.")
    listen: str = Field("127.0.0.1:9181", description="host:port of the webhook listener.")
    path: str = Field("/hooks/gitlab", description="URL path GitLab posts to.")
    max_body_bytes: PositiveInt = Field(1 << 20, description="Largest accepted webhook body.")
    max_connections: PositiveInt = Field(
        128, description="Most connections the listener holds at once; more get a 503 and are closed at once (docs/security/)."
    )
    max_connections_per_address: PositiveInt = Field(
        32, description="Most connections at once from one client address (behind a proxy: the proxy's address)."
    )
    idle_timeout: PositiveFloat = Field(
        5.0, description="Seconds a connection may take to send its request headers, or stay idle between requests."
    )

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        parse_listen(value, default_host="127.0.0.1", any_port=True)  # pydantic names the field
        return value


class RunnerMode(StrEnum):
    REUSABLE = "reusable"
    ONE_JOB = "one-job"


class DockerRuntimeConfig(Frozen):
    """What only the Docker runtime reads (`runner.runtime: docker`, ADR-010)."""

    docker_host: str = Field("unix:///var/run/docker.sock", description="Docker engine the agent drives.")
    config_dir: Path = Field(
        Path("/var/lib/autogit/runners"), description="Where each runner's 0600 config.toml is written."
    )
    network: str | None = Field(None, description="Docker network for runner containers; None: default bridge.")


class KubernetesRuntimeConfig(Frozen):
    """What only the Kubernetes runtime reads (`runner.runtime: kubernetes`, ADR-013)."""

    namespace: str = Field("autogit-runners", description="Namespace of the runner manager pods, their config Secrets and their job pods.")
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file the agent reaches the API server with; None: the in-cluster ServiceAccount."
    )
    context: str | None = Field(None, description="Context of `kubeconfig` to use; None: its current context.")
    service_account: str = Field(
        "autogit-runner", description="ServiceAccount of the manager pods (the Helm chart's `<release>-runner`), allowed to create job pods."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the manager pods (runner.image)."
    )
    request_timeout: PositiveFloat = Field(30, description="Seconds one API request may take before it counts as unreachable.")
    node_selector: str = Field(
        "", description="Label selector of the nodes whose hardware the agent plans for (e.g. `autogit.io/pool=ci`); empty: every node. "
        "It selects what the planner counts, not where job pods may run (their tags place them)."
    )
    inventory_stale_after: PositiveFloat = Field(
        60, description="Seconds the node and pod watches may fail before the cluster inventory counts as unknown (then nothing is planned)."
    )
    gpu_interval: PositiveFloat = Field(
        30, description="Seconds between reads of the cluster's DRA GPUs (DeviceClasses, ResourceSlices) for the planner."
    )


# Keys of `runner` that moved to `runner.docker` with the runtime interface (still read, with one line).
_DOCKER_KEYS = tuple(DockerRuntimeConfig.model_fields)
log = logging.getLogger("autogit.config")


class RunnerConfig(Frozen):
    """How runners are made (ADR-002); `runtime` picks what runs them (ADR-010), `docker` its own keys."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        # `shutdown_timeout` meant the drain deadline before 0.2; gitlab-runner uses that name
        # for its forceful timeout, so the key was renamed to drain_timeout (ADR-007).
        if isinstance(data, dict) and "shutdown_timeout" in data:
            data = dict(data)
            if "drain_timeout" in data:
                raise ValueError("shutdown_timeout is the old name of drain_timeout: give only drain_timeout")
            data["drain_timeout"] = data.pop("shutdown_timeout")
        if isinstance(data, dict) and (moved := [k for k in _DOCKER_KEYS if k in data]):
            data = dict(data)
            docker = dict(data.get("docker") or {})
            for key in moved:
                if key in docker:
                    raise ValueError(f"runner.{key} is the old place of runner.docker.{key}: give only runner.docker.{key}")
                docker[key] = data.pop(key)
            data["docker"] = docker
            log.warning("config: %s moved to %s (the old keys are still read; move them)",
                        ", ".join(f"runner.{k}" for k in moved), ", ".join(f"runner.docker.{k}" for k in moved))  # fmt: skip
        return data

    @field_validator("drain_timeout")
    @classmethod
    def _drain_within_gitlab_minimum(cls, value: float) -> float:
        # The agent registers runners with maximum_timeout = drain_timeout (no job outlives the
        # drain deadline), and GitLab refuses a maximum_timeout under 600 s (app/models/ci/runner.rb:
        # "needs to be at least 10 minutes"): every registration would fail.
        if value < GITLAB_MIN_MAXIMUM_TIMEOUT_S:
            raise ValueError(
                f"must be at least {GITLAB_MIN_MAXIMUM_TIMEOUT_S} s: it is the runners' maximum_timeout, "
                "which GitLab refuses under 10 minutes"
            )
        return value

    # The Docker runtime's keys by their old names (code written before runner.docker reads them so).
    @property
    def docker_host(self) -> str:
        return self.docker.docker_host

    @property
    def config_dir(self) -> Path:
        return self.docker.config_dir

    @property
    def network(self) -> str | None:
        return self.docker.network

    runtime: str = Field(
        "docker",
        description="What runs the runners (ADR-010): `docker`, the Docker engine on this host; `kubernetes`, manager pods "
        "with gitlab-runner's Kubernetes executor (ADR-013).",
    )
    image: str = Field(DEFAULT_RUNNER_IMAGE, description="Runner manager image (pinned tag or digest).")
    mode: RunnerMode = Field(
        RunnerMode.REUSABLE, description="reusable: runners take jobs until idle-reaped; one-job: run-single --max-builds 1."
    )
    job_image: str = Field("debian:bookworm-slim", description="Default image of job containers (docker executor).")
    drain_timeout: PositiveFloat = Field(
        3600,
        description="Seconds a stopping runner may take to finish its job (SIGQUIT, graceful) before the "
        "agent asks gitlab-runner to abort it (SIGTERM, forceful). Also the runners' maximum_timeout in "
        "GitLab, so at least 600: GitLab refuses a shorter one.",
    )
    force_timeout: PositiveFloat = Field(
        30,
        description="gitlab-runner's own shutdown_timeout: seconds its forceful shutdown (SIGTERM) may take "
        "to abort the job and remove its containers; the agent sends SIGKILL only after this.",
    )
    helper_image: str | None = Field(
        None,
        description="Helper image of the docker executor and of Kubernetes job pods (git, artifacts, cache); None: "
        "gitlab-runner's default from registry.gitlab.com, matching the runner's version.",
    )
    pull_policy: Literal["always", "if-not-present", "never"] = Field(
        "if-not-present",
        description="When the docker executor (or a Kubernetes job pod) pulls job and helper images: if-not-present "
        "starts jobs without a registry round trip; always suits moving tags; never uses local images only.",
    )
    unhealthy_interval: PositiveFloat = Field(
        15,
        description="Seconds gitlab-runner pauses job requests after 3 in a row answered 403 (its default is "
        "60 min, which would strand jobs that long after its token was refused for a while; an outage, a "
        "timeout or a 5xx never pauses it).",
    )
    gitlab_url: AnyHttpUrl | None = Field(
        None, description="GitLab URL as runner containers reach it; default: gitlab.url."
    )
    _gitlab_url_secrets = field_validator("gitlab_url")(_url_without_secrets)
    check_interval: PositiveInt = Field(3, description="gitlab-runner's check_interval (seconds between job requests).")
    privileged_jobs: bool = Field(False, description="Run job containers privileged (needed for docker-in-docker).")
    executor: Literal["docker", "shell"] = Field(
        "docker",
        description="docker: jobs run in sibling containers and get the GPU through config.toml; "
        "shell: jobs run inside the runner container, which then gets the GPU itself.",
    )
    docker: DockerRuntimeConfig = Field(default_factory=DockerRuntimeConfig, description="The Docker runtime's own keys.")
    kubernetes: KubernetesRuntimeConfig = Field(default_factory=KubernetesRuntimeConfig, description="The Kubernetes runtime's own keys.")


_GPU_VENDORS: tuple[Literal["nvidia", "amd", "intel"], ...] = ("nvidia", "amd", "intel")


class GpuConfig(Frozen):
    vendors: list[Literal["nvidia", "amd", "intel"]] = Field(
        default_factory=lambda: list(_GPU_VENDORS), description="GPU vendors to detect and schedule."
    )
    cdi: Literal["auto", "always", "never"] = Field(
        "auto", description="Hand NVIDIA GPUs to jobs as CDI devices: auto uses CDI when dockerd has CDI specs."
    )
    health_interval: PositiveFloat = Field(5.0, description="Seconds one NVML event wait blocks before it loops.")
    readings_interval: PositiveFloat = Field(2.0, description="Seconds between live GPU readings (utilisation, memory, temperature, power).")
    read_timeout: PositiveFloat = Field(
        5.0,
        description="Seconds one GPU read (NVML, sysfs) may take; past it the GPUs of that vendor are unknown and "
        "unhealthy until a read finishes again (a GPU fallen off the bus can hang NVML).",
    )
    ignore: list[str] = Field(default_factory=list, description="GPU ids (UUID or PCI bus id) never to schedule.")


class ApiConfig(Frozen):
    socket: Path = Field(Path("/run/autogit/agent.sock"), description="The agent's unix socket (HTTP/JSON).")
    group: str = Field("autogit", description="Members may read the socket.")
    admin_group: str = Field("autogit-admin", description="Members (and root) may act through the socket.")
    metrics_listen: str | None = Field(None, description="host:port of an optional TCP listener serving /metrics only.")
    health_listen: str | None = Field(
        None,
        description="host:port of an optional TCP listener serving GET /healthz only, for probes: apart from /metrics, so "
        "scrapes and floods of that port cannot fail a liveness probe. 200 while reconcile passes complete, as systemd's watchdog.",
    )
    max_body_bytes: PositiveInt = Field(64 * 1024, description="Largest accepted request body.")
    max_connections: PositiveInt = Field(
        256, description="Most concurrent socket connections of readers and admins together (refused peers never hold one)."
    )
    max_connections_per_uid: PositiveInt = Field(
        32, description="Most concurrent socket connections of one uid, root included; event streams count."
    )
    admin_reserved_connections: NonNegativeInt = Field(
        16,
        description="Connections beyond max_connections that only admins (root, the agent's user, admin_group) may "
        "open, so readers holding every general slot cannot lock them out.",
    )
    event_history: PositiveInt = Field(1000, description="Events kept for ?since= replay.")

    @field_validator("metrics_listen", "health_listen")
    @classmethod
    def _listen_is_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)  # pydantic names the field
        return value


class FleetConfig(Frozen):
    """Several hosts on one GitLab: one runner per job across them (ADR-009, docs/runners/fleet.md)."""

    enabled: bool = Field(
        True,
        description="Publish this host's presence in GitLab (a paused registration `autogit-presence:<host>` that never "
        "runs a job: do not delete it) and plan only for the jobs the fleet gives it; alone, a host plans for every job "
        "either way. false: plan alone for every job, even beside other agents.",
    )
    hold_off: PositiveFloat = Field(
        30, description="Seconds the host ranked r + 1 for a job waits after rank r before it starts for it too."
    )
    membership_ttl: PositiveFloat = Field(90, description="Seconds a host stays a member without a heartbeat.")
    heartbeat_interval: PositiveFloat = Field(30, description="Seconds between refreshes of this host's presence (and reads of its peers').")
    forget_after: PositiveFloat = Field(
        7200,
        description="Seconds a peer's presence may be silent before a live host deletes what it left: its runner "
        "registrations that GitLab shows running no job and not online (GitLab's online window is 2 h), then its presence.",
    )

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> FleetConfig:
        if self.membership_ttl < 2 * self.heartbeat_interval:
            raise ValueError("membership_ttl must be at least twice heartbeat_interval, or live hosts drop out between heartbeats")
        if self.forget_after < self.membership_ttl:
            raise ValueError("forget_after must be at least membership_ttl: a host is forgotten only once it is gone")
        return self


class LeaderElectionConfig(Frozen):
    """Two or more replicas of one agent (on Kubernetes): only the holder of a coordination.k8s.io
    Lease acts, the others observe and serve status (ADR-014, docs/operations/high-availability.md)."""

    enabled: bool = Field(False, description="Stand for election; false: this agent always acts (one replica, or a host).")
    namespace: str | None = Field(
        None, description="The Lease's namespace; default: POD_NAMESPACE, else the pod's service-account namespace."
    )
    lease_name: str = Field("autogit", min_length=1, description="The Lease's name; every replica of one agent uses the same.")
    identity: str | None = Field(
        None, description="This replica's name in the Lease (unique per replica); default: POD_NAME, else the host's name."
    )
    lease_duration: int = Field(
        15, ge=1, description="Seconds (whole: the Lease stores leaseDurationSeconds) a follower waits after the Lease last changed before it takes it over."
    )
    renew_deadline: float = Field(
        10, ge=1, description="Seconds the leader keeps acting after its last successful renewal; below lease_duration."
    )
    retry_period: float = Field(2, ge=1, description="Seconds between tries to acquire or renew the Lease.")
    kubeconfig: Path | None = Field(None, description="A kubeconfig file to reach the API server; default: the in-cluster config.")

    @model_validator(mode="after")
    def _deadlines_in_order(self) -> LeaderElectionConfig:
        # The library's own rules (kubernetes_asyncio leaderelection/electionconfig.py), and ours:
        # the leader stops acting before its Lease can be taken (ADR-014).
        if self.renew_deadline >= self.lease_duration:
            raise ValueError("renew_deadline must be shorter than lease_duration, or two replicas could act at once")
        if self.renew_deadline <= 1.2 * self.retry_period:
            raise ValueError("renew_deadline must be longer than 1.2 × retry_period")
        return self


class AgentConfig(Frozen):
    gitlab: GitLabConfig = Field(default_factory=GitLabConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    leader_election: LeaderElectionConfig = Field(default_factory=LeaderElectionConfig)
    scaling: Policy = Field(default_factory=Policy)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    hostname: str | None = Field(None, description="Name used in runner descriptions; default: the host's name.")
    stop_timeout: NonNegativeFloat = Field(
        30, description="Seconds the agent spends draining on SIGTERM before it exits (runners keep running)."
    )
    state_file: Path | None = Field(
        None,
        description="Where operator intents (pause, GPU and runner drains) are kept across restarts; "
        "default: state.json beside runner.config_dir (/var/lib/autogit/state.json).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Secrets(Frozen):
    gitlab_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    from_environment: frozenset[str] = Field(
        frozenset(), description="Fields read from the environment, which load_secrets removed from it: a reload keeps them."
    )


_SECRET_KEYS = {"token", "private_token", "gitlab_token", "webhook_secret", "secret", "password"}


def _format_errors(exc: ValidationError, source: str) -> list[str]:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/configuration/)"
        lines.append(f"{where}: {msg}")
    return lines


def _find_secret_keys(node: object, path: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).lower() in _SECRET_KEYS:
                found.append(f"{where}: secrets are not read from the config file; use AUTOGIT_GITLAB_TOKEN / AUTOGIT_WEBHOOK_SECRET or a systemd credential")
            found.extend(_find_secret_keys(value, where))
    return found


def parse_config(text: str, source: str = "config") -> AgentConfig:
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(root)"
        raise ConfigError([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(["(root): must be a mapping of sections (gitlab, scaling, runner, ...)"])
    secret_lines = _find_secret_keys(raw)
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _format_errors(exc, source)
        # A secret key is also an unknown key: say the more useful thing once.
        secret_paths = {line.split(":", 1)[0] for line in secret_lines}
        lines = [line for line in lines if line.split(":", 1)[0] not in secret_paths]
        raise ConfigError(secret_lines + lines) from None
    return config


def load_config(path: Path | None = None) -> AgentConfig:
    """Read and validate the config; a missing default file means all defaults."""
    path = path or Path(os.environ.get("AUTOGIT_CONFIG", DEFAULT_CONFIG_PATH))
    try:
        text = path.read_text()
    except FileNotFoundError:
        if path == DEFAULT_CONFIG_PATH:
            return AgentConfig()
        raise ConfigError([f"(file): {path} does not exist"]) from None
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from None
    return parse_config(text, str(path))


def _credential(name: str) -> str | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    try:
        return (Path(directory) / name).read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:  # there but unreadable: said, not taken for absent
        log.warning("credential %s in $CREDENTIALS_DIRECTORY cannot be read (%s): falling back to the environment", name, exc.strerror)
        return None


# Each secret: its field, its systemd credential, its environment variable.
_SECRET_SOURCES = (("gitlab_token", "gitlab-token", "AUTOGIT_GITLAB_TOKEN"), ("webhook_secret", "webhook-secret", "AUTOGIT_WEBHOOK_SECRET"))
# Shorter webhook secrets draw one warning at start (docs/security/: use 32 random bytes).
MIN_WEBHOOK_SECRET_CHARS = 16


def load_secrets(environ: MutableMapping[str, str] | None = None, previous: Secrets | None = None) -> Secrets:
    """Secrets from systemd credentials first ($CREDENTIALS_DIRECTORY/gitlab-token, webhook-secret:
    LoadCredential= in the shipped unit), then the environment (AUTOGIT_GITLAB_TOKEN,
    AUTOGIT_WEBHOOK_SECRET, the env-file fallback). Each variable is taken out of the environment
    once read, used or not (agent/secret_env.py), so that /proc/<pid>/environ and the agent's
    children never carry it; on a reload, `previous`'s values that came from the environment
    stand in for the variables no longer there."""
    values: dict[str, SecretStr | None] = {}
    from_env: set[str] = set()
    for field, credential, variable in _SECRET_SOURCES:
        in_env = secret_env.take(variable, environ)
        value = _credential(credential)
        if value is None and in_env is not None:
            value = in_env
            from_env.add(field)
        elif value is None and previous is not None and field in previous.from_environment:
            kept = getattr(previous, field)
            value = kept.get_secret_value() if kept is not None else None
            from_env.add(field)
        values[field] = SecretStr(value) if value else None
    return Secrets(gitlab_token=values["gitlab_token"], webhook_secret=values["webhook_secret"], from_environment=frozenset(from_env))


def weak_webhook_secret(secrets: Secrets) -> str | None:
    """One warning line when the webhook secret is short enough to guess, else None."""
    secret = secrets.webhook_secret
    if secret is None or len(secret.get_secret_value()) >= MIN_WEBHOOK_SECRET_CHARS:
        return None
    return (f"the webhook secret is shorter than {MIN_WEBHOOK_SECRET_CHARS} characters: anyone who guesses it can make the agent "
            "look jobs up; use 32 random bytes (openssl rand -hex 32) in GitLab's webhook and in the agent")  # fmt: skip
