"""`runner.runtime: kubernetes` (ADR-013): each runner is one gitlab-runner manager pod with the
Kubernetes executor, its config.toml (which holds its token) only in a Secret.

The objects are built by agent/runtime/kubernetes.py (manager_pod, runner_secret,
kubernetes_section); this module drives the API server with kubernetes_asyncio and maps what it
reads back onto the neutral RunnerInstance. The pods and Secrets carry everything needed to adopt
them after an agent restart (labels: the owning agent, the runner; annotations: its registration,
tags, and when a stop or an abort was asked for): the world is the state.

Stopping (ADR-013 says why): gitlab-runner stops gracefully on SIGQUIT and treats SIGTERM as
forceful, so drain and abort send those signals to the runner's PID 1 through `pods/exec`
(`kill -QUIT 1`, `kill -TERM 1`); the pod then ends in phase Succeeded/Failed and stays listed
(EXITED) until remove(), as a Docker container does. kill() deletes the pod with grace 0.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import logging
import re
import tomllib
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import tomli_w
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, ResourceV1Api, V1DeleteOptions
from kubernetes_asyncio.config import load_incluster_config, load_kube_config
from kubernetes_asyncio.stream import WsApiClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..config import AgentConfig, RunnerConfig
from ..digits import parse_uint
from ..dra import GPU_CLASS, NoDevice, Undecided, claim_for, claim_template, gpu_path
from ..errors import AdapterError, InvalidConfiguration, NotFound, Transient
from ..inventory.kubernetes import GpuProfile, unit_resource
from ..model import Gpu, Host, RunnerKind
from ..tags import gpu_tags
from .base import RunnerInstance, RunnerSpec, RunnerStatus
from .dra_support import read_devices, read_support
from .k8s_errors import translate
from .kubernetes import (
    CA_KEY, CONFIG_DIR, CONFIG_KEY, OWNER_LABEL, POD_SPEC_FEATURE_FLAG, RUNNER_LABEL, kubernetes_section, manager_pod, placement, runner_secret,
    with_gpu_claim,
)  # fmt: skip
from .runner_config import render_config, short_tokens

__all__ = ["JOB_OF_LABEL", "SHORT_TOKEN_LABEL", "KubernetesRuntime", "ManagedPod", "kubernetes_runtime", "label_value", "pod_status"]

# Set on job pods through [runners.kubernetes] pod_labels: the runner they belong to.
JOB_OF_LABEL = "autogit.io/job-of"
# gitlab-runner's Kubernetes executor labels every job pod with its ShortenToken(token)
# (docs/executors/kubernetes/_index.md, "Default labels for job pods"); both forms (runner_config).
SHORT_TOKEN_LABEL = "manager.runner.gitlab.com/id-short"
_A = "autogit.io/"
STOP_ANNOTATION, ABORT_ANNOTATION = f"{_A}stop-requested-at", f"{_A}abort-requested-at"
_RUNNER_CONTAINER = "runner"
CLAIM_SUFFIX = "-gpu"  # a GPU runner's ResourceClaimTemplate: <runner>-gpu
T = TypeVar("T")
log = logging.getLogger(__name__)


# --- the pod as read back (wire models: unknown fields ignored) ---------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Meta(_Wire):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(None, alias="deletionTimestamp")


class _Running(_Wire):
    started_at: datetime | None = Field(None, alias="startedAt")


class _Terminated(_Wire):
    started_at: datetime | None = Field(None, alias="startedAt")
    finished_at: datetime | None = Field(None, alias="finishedAt")
    exit_code: int | None = Field(None, alias="exitCode")


class _State(_Wire):
    running: _Running | None = None
    terminated: _Terminated | None = None


class _ContainerStatus(_Wire):
    name: str
    state: _State = Field(default_factory=_State)


class _PodStatus(_Wire):
    phase: str | None = None
    container_statuses: list[_ContainerStatus] = Field(default_factory=list, alias="containerStatuses")


class ManagedPod(_Wire):
    """A pod as the API server serves it, reduced to what the runtime reads."""

    metadata: _Meta
    status: _PodStatus = Field(default_factory=_PodStatus)


def pod_status(pod: ManagedPod) -> tuple[RunnerStatus, datetime | None, datetime | None]:
    """(status, since, started_at) of a manager pod. A pod being deleted is GONE; Pending is
    CREATING (scheduling, image pull, the config copy); Running with the runner's process up is
    RUNNING; Succeeded/Failed, or the runner's container ended, is EXITED; anything else (phase
    Unknown: its node is unreachable) is UNKNOWN, never read as exited."""
    runner = next((c.state for c in pod.status.container_statuses if c.name == _RUNNER_CONTAINER), _State())
    started = runner.running.started_at if runner.running else runner.terminated.started_at if runner.terminated else None
    finished = runner.terminated.finished_at if runner.terminated else None
    phase = pod.status.phase
    if pod.metadata.deletion_timestamp is not None:
        return RunnerStatus.GONE, None, started
    if phase in ("Succeeded", "Failed") or (phase == "Running" and runner.terminated is not None):
        return RunnerStatus.EXITED, finished, started
    if phase == "Running" and runner.running is not None:
        return RunnerStatus.RUNNING, started, started
    if phase in ("Pending", "Running"):  # Running with its runner container restarting or not reported yet
        return RunnerStatus.CREATING, pod.metadata.creation_timestamp, started
    return RunnerStatus.UNKNOWN, None, started


_LABEL_CHAR = re.compile(r"[^A-Za-z0-9._-]")


def label_value(value: str) -> str:
    """`value` as a Kubernetes label value can hold it: at most 63 characters of `[A-Za-z0-9._-]`,
    alphanumeric at both ends. The API server refuses anything else, in a label and in a selector
    (400): a short token such as `8azf1mwj_` cannot be a label value as it is, so the job pods of
    its runner carry a cleaned form; this is the form the agent selects by (characters replaced
    by `_`, the ends trimmed). That it is exactly gitlab-runner's own cleaning is checked only
    when the double gains the Kubernetes executor (ADR-013); the agent's own `autogit.io/job-of`
    label finds the job pods either way."""
    cleaned = _LABEL_CHAR.sub("_", value)[:63]
    return cleaned.strip("._-")


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _token_of(secret_data: dict[str, str] | None) -> str | None:
    """The runner's token from its Secret's config.toml (base64 in `data`, as the API serves it)."""
    try:
        text = base64.b64decode((secret_data or {})[CONFIG_KEY]).decode()
        return str(tomllib.loads(text)["runners"][0]["token"])
    except (KeyError, IndexError, ValueError, TypeError, tomllib.TOMLDecodeError):
        return None


def _gpu_placement(spec: RunnerSpec) -> tuple[GpuProfile | None, frozenset[str]]:
    """The GPU resource the planner chose (a free unit of a node's, agent/inventory/cluster.py) as
    a profile for placement(), and for a whole NVIDIA GPU its product label, so that tags no
    label orders (the family) hold too (ADR-016)."""
    if spec.gpu is None:
        return None, frozenset()
    unit = unit_resource(spec.gpu.id)
    if unit is None:  # a host's GPU id: never reaches a pod (no device path on a cluster, ADR-013)
        raise InvalidConfiguration(f"runner {spec.name}: GPU {spec.gpu.id} is not a node's GPU resource", field="runner.runtime")
    node, resource = unit
    profile = GpuProfile(node, resource, frozenset(spec.tags), 1, 0, spec.gpu.memory_mb, spec.gpu)
    whole_nvidia = resource == "nvidia.com/gpu" and bool(spec.gpu.model) and spec.gpu.mig_parent is None
    return profile, frozenset({spec.gpu.model.replace(" ", "-")}) if whole_nvidia else frozenset()


def kubernetes_runtime(config: AgentConfig, hostname: str, host: Host) -> KubernetesRuntime:
    """The `runner.runtime: kubernetes` factory (agent/runtime/__init__.py)."""
    return KubernetesRuntime(config.runner, hostname)


class KubernetesRuntime:
    """Runner manager pods in `runner.kubernetes.namespace`, owned by the agent named `hostname`."""

    def __init__(self, config: RunnerConfig, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        self._client: ApiClient | None = None
        self._ws: WsApiClient | None = None
        self._tokens: dict[str, str] = {}  # runner → token, from its Secret (credentials() is synchronous)

    @property
    def namespace(self) -> str:
        return self.config.kubernetes.namespace

    # --- plumbing ---------------------------------------------------------------------------------
    async def _configuration(self) -> Configuration:
        k8s = self.config.kubernetes
        configuration = Configuration()
        try:
            if k8s.kubeconfig is not None:
                await load_kube_config(config_file=str(k8s.kubeconfig), context=k8s.context, client_configuration=configuration,
                                       persist_config=False)  # fmt: skip
            else:
                load_incluster_config(client_configuration=configuration)
        except Exception as exc:  # the loaders raise ConfigException, OSError, yaml and key errors alike
            field = "runner.kubernetes.kubeconfig"
            raise InvalidConfiguration(
                f"loading the API server's address and credentials: {type(exc).__name__}: {exc}", field=field
            ) from None
        return configuration

    async def api_configuration(self) -> Configuration:
        """The API server's address and credentials as this runtime reads them (the cluster
        inventory opens its own client with them: its watches hold their connections)."""
        return await self._configuration()

    async def _api(self) -> CoreV1Api:
        if self._client is None:
            self._client = ApiClient(await self._configuration())
        return CoreV1Api(self._client)

    async def _call(self, request: Callable[[CoreV1Api], Awaitable[T]], what: str, *, verb: str, resource: str,
                    config_field: str | None = None) -> T:  # fmt: skip
        """One API request; every library failure leaves as agent.errors (k8s_errors.translate)."""
        try:
            return await request(await self._api())
        except Exception as exc:
            raise translate(exc, what, verb=verb, resource=resource, config_field=config_field) from None

    def _owned(self) -> str:
        return f"{OWNER_LABEL}={self.hostname}"

    def _timeout(self) -> float:
        return self.config.kubernetes.request_timeout

    def reconfigure(self, config: AgentConfig) -> None:
        """A reloaded configuration; the namespace and the API server's address and credentials need a
        restart (agent/daemon.py RESTART_KEYS): their running values are kept."""
        kept = self.config.kubernetes
        fresh = config.runner.kubernetes.model_copy(
            update={"namespace": kept.namespace, "kubeconfig": kept.kubeconfig, "context": kept.context}
        )
        self.config = config.runner.model_copy(update={"kubernetes": fresh})

    async def close(self) -> None:
        for client in (self._client, self._ws):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
        self._client = self._ws = None

    # --- config.toml and objects ------------------------------------------------------------------
    def render_config(self, spec: RunnerSpec, claim_template: str | None = None) -> dict[str, Any]:
        """gitlab-runner's config.toml for one runner with the Kubernetes executor: the neutral
        keys of runner_config.render_config, its [runners.docker] table replaced by
        [runners.kubernetes] (job pods in this namespace, placed by the job's architecture,
        labelled with the runner's name). A GPU runner's job pods hold their GPU through the
        DRA claim made from `claim_template` when create() chose that path (gpu_path), else
        through the GPU's extended resource (its id is `<node>/<resource>#<n>`, as the cluster
        inventory names it) and node affinity."""
        config = render_config(self.config, spec, gpu_devices=[], gpu_groups=[])
        runner = config["runners"][0]
        runner.pop("docker", None)
        runner["executor"] = "kubernetes"
        arch = spec.platform.split("/")[1] if spec.platform.count("/") >= 1 else None
        gpu, products = _gpu_placement(spec) if claim_template is None else (None, frozenset[str]())
        where = placement(frozenset(spec.tags), arch, gpu, products)
        k8s = self.config.kubernetes
        section = kubernetes_section(
            where, namespace=k8s.namespace, service_account=k8s.service_account, image=self.config.job_image,
            labels={JOB_OF_LABEL: spec.name, OWNER_LABEL: self.hostname},
            cpu=f"{spec.cpus:g}" if spec.cpus else None, memory=f"{spec.memory_mb}Mi" if spec.memory_mb else None,
            helper_image=self.config.helper_image, pull_policy=self.config.pull_policy,
        )  # fmt: skip
        if claim_template is not None:
            section = with_gpu_claim(section, claim_template)
        runner["kubernetes"] = section
        if where.limits or claim_template is not None:
            runner["feature_flags"] = {POD_SPEC_FEATURE_FLAG: True}
        if spec.ca_pem:
            # the init step copies the Secret's CA beside config.toml (manager_pod `files`)
            runner["tls-ca-file"] = f"{CONFIG_DIR}/{CA_KEY}"
        return config

    async def _gpu_claim(self, spec: RunnerSpec) -> dict[str, Any] | None:
        """The ResourceClaimTemplate a GPU runner's job pods are to hold, where the cluster hands
        its GPU out by DRA (None: the extended-resource path). Unknown support starts nothing
        (Transient: the next pass reads again); no device carrying the runner's GPU tags refuses it."""
        assert spec.gpu is not None
        await self._api()
        assert self._client is not None
        path = gpu_path(await read_support(self._client, self._timeout()), spec.gpu)
        if isinstance(path, Undecided):
            raise Transient(f"runner {spec.name}: GPU path not decided: {path.reason}", what=f"runner {spec.name}")
        if path == "extended-resource":
            return None
        devices, _problems = await read_devices(self._client, self._timeout())  # unreadable devices are skipped; the rest serve
        # The claim states the runner's GPU tags; the rest (architecture, scaling.extra_tags) are the node's.
        plan = claim_for(spec.tags, devices, node_tags=frozenset(spec.tags) - gpu_tags(spec.gpu))
        if isinstance(plan, NoDevice):
            raise InvalidConfiguration(f"runner {spec.name}: {plan.reason}", field="runner.runtime", what=f"runner {spec.name}")
        labels = {RUNNER_LABEL: spec.name, OWNER_LABEL: self.hostname}
        return claim_template(f"{spec.name}{CLAIM_SUFFIX}", self.namespace, labels, plan)

    def _annotations(self, spec: RunnerSpec) -> dict[str, str]:
        return {f"{_A}gitlab-id": str(spec.gitlab_id), f"{_A}tags": ",".join(spec.tags), f"{_A}run-untagged": str(spec.run_untagged).lower(),
                f"{_A}kind": spec.kind.value, f"{_A}platform": spec.platform, f"{_A}reach": spec.reach or ""} | (
                    {f"{_A}gpu": spec.gpu.id} if spec.gpu is not None else {})  # the unit it holds, read back as RunnerInstance.gpus  # fmt: skip

    def _pod(self, spec: RunnerSpec) -> dict[str, Any]:
        grace = int(self.config.drain_timeout + self.config.force_timeout)
        pod = manager_pod(spec.name, self.namespace, image=self.config.image, service_account=self.config.kubernetes.service_account,
                          owner=self.hostname, annotations=self._annotations(spec), grace_seconds=grace,
                          files=(CONFIG_KEY, CA_KEY) if spec.ca_pem else (CONFIG_KEY,))  # fmt: skip
        pull = self.config.kubernetes.image_pull_policy
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:  # type: ignore[index]
            container["imagePullPolicy"] = pull
        return pod

    # --- lifecycle ----------------------------------------------------------------------------------
    async def create(self, spec: RunnerSpec) -> RunnerInstance:
        """The GPU claim's template (DRA only), the config Secret, then the manager pod; on any
        failure none of them is left."""
        template = await self._gpu_claim(spec) if spec.gpu is not None else None
        name = template["metadata"]["name"] if template is not None else None
        toml = tomli_w.dumps(self.render_config(spec, claim_template=name))
        secret = runner_secret(spec.name, self.namespace, toml, owner=self.hostname, ca_pem=spec.ca_pem)
        if template is not None:
            await self._call_resource(lambda api: api.create_namespaced_resource_claim_template(self.namespace, cast(Any, template),
                                                                                                  _request_timeout=self._timeout()),
                                      f"creating ResourceClaimTemplate {name}", verb="create", resource="resourceclaimtemplates.resource.k8s.io")  # fmt: skip
        try:
            await self._call(lambda api: api.create_namespaced_secret(self.namespace, cast(Any, secret), _request_timeout=self._timeout()),
                             f"creating Secret {spec.name}-config", verb="create", resource="secrets")  # fmt: skip
        except BaseException:
            with contextlib.suppress(AdapterError):
                await self._delete_claim_template(spec.name)
            raise
        try:
            created = await self._call(
                lambda api: api.create_namespaced_pod(self.namespace, cast(Any, self._pod(spec)), _request_timeout=self._timeout()),
                f"creating runner pod {spec.name} from {self.config.image}", verb="create", resource="pods", config_field="runner.image",
            )  # fmt: skip
        except BaseException:
            with contextlib.suppress(AdapterError):
                await self._delete_secret(spec.name)
            with contextlib.suppress(AdapterError):
                await self._delete_claim_template(spec.name)
            raise
        self._tokens[spec.name] = spec.token.get_secret_value()
        assert self._client is not None
        return self._view(ManagedPod.model_validate(self._client.sanitize_for_serialization(created)), {})

    async def _call_resource(self, request: Callable[[ResourceV1Api], Awaitable[T]], what: str, *, verb: str, resource: str) -> T:
        """One resource.k8s.io request, failures translated as _call's."""
        await self._api()
        assert self._client is not None
        try:
            return await request(ResourceV1Api(self._client))
        except Exception as exc:
            raise translate(exc, what, verb=verb, resource=resource) from None

    async def _delete_claim_template(self, runner: str) -> None:
        """The runner's ResourceClaimTemplate, if it has one (claims made from it belong to their
        job pods and go with them)."""
        name = f"{runner}{CLAIM_SUFFIX}"
        with contextlib.suppress(NotFound):
            await self._call_resource(lambda api: api.delete_namespaced_resource_claim_template(name, self.namespace, _request_timeout=self._timeout()),
                                      f"deleting ResourceClaimTemplate {name}", verb="delete", resource="resourceclaimtemplates.resource.k8s.io")  # fmt: skip

    async def _pods(self, selector: str) -> builtins.list[dict[str, Any]]:
        listed = await self._call(lambda api: api.list_namespaced_pod(self.namespace, label_selector=selector, _request_timeout=self._timeout()),
                                  f"listing pods ({selector})", verb="list", resource="pods")  # fmt: skip
        assert self._client is not None
        return list(self._client.sanitize_for_serialization(listed).get("items") or [])

    async def _secrets(self) -> builtins.list[dict[str, Any]]:
        selector = f"{self._owned()},{RUNNER_LABEL}"
        listed = await self._call(lambda api: api.list_namespaced_secret(self.namespace, label_selector=selector, _request_timeout=self._timeout()),
                                  "listing runner Secrets", verb="list", resource="secrets")  # fmt: skip
        assert self._client is not None
        return list(self._client.sanitize_for_serialization(listed).get("items") or [])

    async def list(self) -> builtins.list[RunnerInstance]:
        """Manager pods of this agent (any phase) with the job pods each owns now; the tokens of
        their Secrets are kept for credentials(). Raises Transient when the API cannot be read."""
        pods = [ManagedPod.model_validate(p) for p in await self._pods(self._owned())]
        secrets = await self._secrets()
        self._tokens = {name: token for s in secrets
                        if (name := s["metadata"].get("labels", {}).get(RUNNER_LABEL)) and (token := _token_of(s.get("data")))}  # fmt: skip
        jobs: dict[str, int] = {}
        for pod in pods:
            owner = pod.metadata.labels.get(JOB_OF_LABEL)
            if owner and pod.status.phase not in ("Succeeded", "Failed") and pod.metadata.deletion_timestamp is None:
                jobs[owner] = jobs.get(owner, 0) + 1
        managers = [p for p in pods if RUNNER_LABEL in p.metadata.labels and JOB_OF_LABEL not in p.metadata.labels]
        return sorted((self._view(p, jobs) for p in managers), key=lambda r: r.name)

    def _view(self, pod: ManagedPod, jobs: dict[str, int]) -> RunnerInstance:
        meta = pod.metadata
        notes = meta.annotations
        status, since, started = pod_status(pod)
        gitlab_id = notes.get(f"{_A}gitlab-id", "")
        return RunnerInstance(
            name=meta.name, gitlab_id=parse_uint(gitlab_id), host=meta.labels.get(OWNER_LABEL, ""),
            tags=[t for t in notes.get(f"{_A}tags", "").split(",") if t], run_untagged=notes.get(f"{_A}run-untagged") == "true",
            kind=RunnerKind(notes.get(f"{_A}kind", "native")), platform=notes.get(f"{_A}platform", ""), reach=notes.get(f"{_A}reach") or None,
            status=status, status_since=since, created_at=meta.creation_timestamp, started_at=started,
            stop_requested_at=_time(notes.get(STOP_ANNOTATION)), abort_requested_at=_time(notes.get(ABORT_ANNOTATION)),
            jobs=jobs.get(meta.name, 0), gpus=[notes[f"{_A}gpu"]] if notes.get(f"{_A}gpu") else [],
        )  # fmt: skip

    async def drain(self, name: str) -> None:
        """Graceful: SIGQUIT to the runner (take no new job, exit after the current one),
        recorded on the pod first so that the deadline survives an agent restart."""
        await self._signal(name, "QUIT", STOP_ANNOTATION)

    async def abort(self, name: str) -> None:
        """Forceful: SIGTERM makes gitlab-runner abort its job and delete its job pods within its
        shutdown_timeout (commands/multi.go). Recorded like the graceful stop."""
        await self._signal(name, "TERM", ABORT_ANNOTATION)

    async def _signal(self, name: str, signal: str, annotation: str) -> None:
        """Record the request on the pod, then signal the runner if its process runs: a manager
        not started yet (image pull, the config copy) holds no job, and one that ended needs
        nothing (as a Docker container that is not running)."""
        patch = {"metadata": {"annotations": {annotation: _now()}}}
        try:
            patched = await self._call(
                lambda api: api.patch_namespaced_pod(name, self.namespace, patch, _request_timeout=self._timeout()),
                f"recording SIG{signal} on pod {name}", verb="patch", resource="pods",
            )  # fmt: skip
        except NotFound:
            return  # gone: the goal is reached
        assert self._client is not None
        if pod_status(ManagedPod.model_validate(self._client.sanitize_for_serialization(patched)))[0] is not RunnerStatus.RUNNING:
            return
        if self._ws is None:
            self._ws = WsApiClient(await self._configuration())
        ws = CoreV1Api(self._ws)
        try:
            await ws.connect_get_namespaced_pod_exec(name, self.namespace, container=_RUNNER_CONTAINER, command=cast(Any, ["kill", f"-{signal}", "1"]),
                                                     stderr=True, stdin=False, stdout=True, tty=False, _request_timeout=self._timeout())  # fmt: skip
        except Exception as exc:
            error = translate(exc, f"SIG{signal} to runner pod {name}", verb="get, create", resource="pods/exec")
            if not isinstance(error, NotFound):
                raise error from None

    async def kill(self, name: str) -> None:
        """Immediate: the pod is deleted with grace 0 (SIGKILL); remove() sweeps its job pods."""
        await self._delete_pod(name, grace=0)

    async def _delete_pod(self, name: str, grace: int | None = None) -> None:
        body = V1DeleteOptions(grace_period_seconds=grace)
        with contextlib.suppress(NotFound):
            await self._call(lambda api: api.delete_namespaced_pod(name, self.namespace, body=body, _request_timeout=self._timeout()),
                             f"deleting pod {name}", verb="delete", resource="pods")  # fmt: skip

    async def _delete_secret(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(lambda api: api.delete_namespaced_secret(f"{name}-config", self.namespace, _request_timeout=self._timeout()),
                             f"deleting Secret {name}-config", verb="delete", resource="secrets")  # fmt: skip

    async def remove(self, name: str) -> None:
        """The manager pod (at once: it is called for exited or orphaned runners), the job pods it
        left (by the agent's label and by gitlab-runner's short-token label), then its Secret."""
        token = self._tokens.get(name) or await self._read_token(name)
        await self._delete_pod(name, grace=0)
        await self.remove_job_pods(name, token)
        await self._delete_secret(name)
        await self._delete_claim_template(name)
        self._tokens.pop(name, None)

    async def _read_token(self, name: str) -> str | None:
        try:
            secret = await self._call(lambda api: api.read_namespaced_secret(f"{name}-config", self.namespace, _request_timeout=self._timeout()),
                                      f"reading Secret {name}-config", verb="get", resource="secrets")  # fmt: skip
        except NotFound:
            return None
        return _token_of(secret.data)

    async def remove_job_pods(self, name: str, token: str | None) -> builtins.list[str]:
        """Job pods of runner `name`: labelled by the agent (pod_labels) or by gitlab-runner with
        its short token (either form: runner_config.short_tokens)."""
        shorts = {value for short in (short_tokens(token) if token else []) if (value := label_value(short))}
        selectors = [f"{JOB_OF_LABEL}={name}"] + [f"{SHORT_TOKEN_LABEL}={short}" for short in sorted(shorts)]
        removed: builtins.list[str] = []
        for selector in selectors:
            for pod in await self._pods(selector):
                pod_name = pod["metadata"]["name"]
                if pod_name not in removed:
                    await self._delete_pod(pod_name, grace=0)
                    removed.append(pod_name)
        return removed

    async def leftovers(self, known: Collection[str]) -> builtins.list[str]:
        """Secrets of this agent's runners with no manager pod and not in `known` (the agent died
        mid-create, the pod was deleted by hand), with the job pods their runner left and its GPU
        claim's template; job pods of runners neither known nor listed; and templates of such
        runners left without a Secret."""
        pods = [ManagedPod.model_validate(p) for p in await self._pods(self._owned())]
        present = {p.metadata.name for p in pods if JOB_OF_LABEL not in p.metadata.labels} | set(known)
        removed: builtins.list[str] = []
        swept: set[str] = set()  # runners whose Secret went, their template with it
        for secret in await self._secrets():
            runner = secret["metadata"].get("labels", {}).get(RUNNER_LABEL)
            if runner and runner not in present:
                removed += await self.remove_job_pods(runner, _token_of(secret.get("data")))
                await self._delete_secret(runner)
                await self._delete_claim_template(runner)
                self._tokens.pop(runner, None)
                removed.append(f"{runner}-config")
                swept.add(runner)
        for pod in pods:
            owner = pod.metadata.labels.get(JOB_OF_LABEL)
            if owner and owner not in present and pod.metadata.name not in removed:
                await self._delete_pod(pod.metadata.name, grace=0)
                removed.append(pod.metadata.name)
        for runner in await self._claim_template_runners():
            if runner not in present and runner not in swept:  # the agent died between the template and the Secret
                await self._delete_claim_template(runner)
                removed.append(f"{runner}{CLAIM_SUFFIX}")
        return removed

    async def _claim_template_runners(self) -> builtins.list[str]:
        """The runners this agent made ResourceClaimTemplates for (where resource.k8s.io/v1 is
        not served there are none)."""
        selector = f"{self._owned()},{RUNNER_LABEL}"
        try:
            listed = await self._call_resource(
                lambda api: api.list_namespaced_resource_claim_template(self.namespace, label_selector=selector, _request_timeout=self._timeout()),
                "listing ResourceClaimTemplates", verb="list", resource="resourceclaimtemplates.resource.k8s.io",
            )  # fmt: skip
        except NotFound:
            return []
        return [r for t in listed.items or [] if t.metadata and (r := (t.metadata.labels or {}).get(RUNNER_LABEL))]

    async def cluster_gpus(self) -> builtins.list[Gpu] | None:
        """The cluster's GPUs the planner may give a runner, where DRA hands them out: each whole
        GPU in the NVIDIA driver's ResourceSlices, as the host inventory's Gpu (DraDevice.as_gpu:
        the tags a host GPU of that model carries; id `<node>/<pool>/<device>`). [] where DRA is
        not served or the `gpu.nvidia.com` class is absent (GPUs behind extended resources reach
        the planner with the cluster inventory, not yet); None when any of it cannot be read
        (unknown: the caller keeps what it had). MIG devices are not offered yet."""
        await self._api()
        assert self._client is not None
        support = await read_support(self._client, self._timeout())
        if support.served is None or (support.served and support.classes is None):
            log.warning("cluster GPUs not read: %s", support.problem)
            return None
        if not support.served or GPU_CLASS not in (support.classes or frozenset()):
            return []
        try:
            devices, problems = await read_devices(self._client, self._timeout())
        except AdapterError as exc:
            log.warning("cluster GPUs not read: %s", exc)
            return None
        for line in problems:
            log.warning("%s", line)
        return [d.as_gpu() for d in devices if d.kind == "gpu"]

    def credentials(self, name: str) -> SecretStr | None:
        """The runner's token, as its Secret held it when last listed or created (never logged)."""
        token = self._tokens.get(name)
        return SecretStr(token) if token else None
