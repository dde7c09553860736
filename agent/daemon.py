"""`autogit-agent run`: wires the pieces together and speaks to systemd.

Startup: config (exit 78 if bad) → inventory → socket API → first full observation → READY=1.
Then the reconcile loop runs; hotplug, webhooks and operator actions wake it early.
SIGHUP (or POST /v1/config/reload): RELOADING=1, re-read the config and the secrets (a bad
config is refused, the old one kept), apply every key that can change while running, READY=1.
Applied live: the GitLab adapter (url, scope, timeouts, retries, TLS; rebuilt, then a full poll
at once), gitlab.poll_interval, the scaling policy (caps, idle timeout, warm pool, ...), the
runner settings for runners started from now on, gpu.vendors (the inventory is rebuilt, health
verdicts kept), gpu.readings_interval, gpu.ignore, stop_timeout and log_level. RESTART_KEYS
only apply at start; a reload that changes one names it in the event, in `status` and in the
journal (see `config_changes`).
SIGTERM: STOPPING=1, finish the pass in flight (within `stop_timeout`), hand the Lease back
(leader_election), close the socket, exit.
leader_election.enabled: the replica stands for a Lease (agent/election.py, ADR-014); every
pass observes and publishes, only the leader's passes act.
Runner containers are not stopped with the agent: they keep running their jobs and the next
agent adopts them (an upgrade or restart never disturbs a job). Operator intents (pause, GPU
and runner drains) are saved on each change and read back at start (agent.statefile).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from datetime import datetime, UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api.server import ApiServer
from .config import AgentConfig, ConfigError, Secrets, load_config, load_secrets, weak_webhook_secret
from .election import Election
from .errors import AdapterError
from .events import Event, EventBus
from .gitlab.adapter import GitLabAdapter, GitLabError
from .gitlab.hook_lookups import budget_low
from .gitlab.webhook import WebhookListener
from .inventory.cpu import observe_cpu
from .inventory.gpu import GpuInventory, GpuSnapshot, mig_instance_changes
from .inventory.host import build_host
from .health import HEALTH_LIMITS, start_health_listener
from .metrics import METRICS_LIMITS, AgentMetrics, start_metrics_listener
from .model import Gpu, GpuVendor, Host
from .reconciler import Reconciler
from .runtime import build_runtime
from .runtime.k8s_runtime import KubernetesRuntime
from .state import AgentPhase, AgentState, ConfigReport, Intents
from .statefile import StateFile, describe, state_file_path
from .systemd import Notifier
from .tcp_guard import descriptor_shortfall, install_accept_error_log

if TYPE_CHECKING:
    from .inventory.cluster import ClusterInventory
    from .inventory.hotplug import HotplugWatcher

__all__ = ["RESTART_KEYS", "Agent", "config_changes", "configure_logging", "run_agent"]

log = logging.getLogger("autogit.agent")

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """`<6>message` lines: journald reads the priority prefix (SyslogLevelPrefix=yes) and adds
    its own time stamp, so none is printed. Outside journald, a plain timestamped line."""

    def __init__(self, journal: bool) -> None:
        super().__init__("%(message)s" if journal else "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{text}" if self.journal else text


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter(journal="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "docker", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Keys a running agent cannot take over: the socket and its guards are bound, the webhook and
# metrics listeners are listening, the event history is allocated, runner names and the
# Docker engine and config folder of the runners it adopted are fixed, CDI is chosen and the
# NVML health thread started at start, the state file read at start. A prefix ending in "."
# covers its whole section.
RESTART_KEYS = ("api.", "webhook.", "leader_election.", "hostname", "runner.runtime", "runner.docker.docker_host", "runner.docker.config_dir",
                "runner.kubernetes.namespace", "runner.kubernetes.kubeconfig", "runner.kubernetes.context", "runner.kubernetes.node_selector", "gpu.cdi", "gpu.health_interval", "state_file")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _needs_restart(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESTART_KEYS)


def config_changes(old: AgentConfig, new: AgentConfig) -> tuple[list[str], list[str]]:
    """The dotted keys whose value differs, as (applied live, needing a restart), each sorted.
    A map (e.g. scaling.max_per_arch) counts by entry: scaling.max_per_arch.arm64."""
    before, after = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [k for k in changed if not _needs_restart(k)], [k for k in changed if _needs_restart(k)]


class Agent:
    def __init__(self, config: AgentConfig, config_path: Path | None, notifier: Notifier | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.hostname = config.hostname or socket.gethostname()
        self.state = AgentState(EventBus(history=config.api.event_history))
        self.metrics = AgentMetrics()
        self.metrics.bind_state(self.state)
        self.gpus = GpuInventory(vendors=[GpuVendor(v) for v in config.gpu.vendors])
        self.cpu = observe_cpu()
        self._hung_vendors: set[str] = set()  # vendors whose last GPU read missed gpu.read_timeout
        self._refresh_wanted = False
        self._refresh_task: asyncio.Task[None] | None = None
        # runner.runtime kubernetes: the cluster's GPUs (read by the runtime, ADR-015) join the
        # planner's view; ids ever seen, so that the NVML-broken rule below never keeps one
        self._cluster_gpus: list[Gpu] = []
        self._cluster_gpu_ids: set[str] = set()
        self._snapshots: list[GpuSnapshot] = []
        self._host: Host = self._observe_host()
        secrets = load_secrets()
        self._secrets = secrets
        if (weak := weak_webhook_secret(secrets)) is not None:
            log.warning("%s", weak)
        self._started = config  # what only a restart changes is compared with this one
        self.gitlab = self._adapter(config, secrets)
        self.metrics.watch_gitlab(self.gitlab)
        self.state.config = ConfigReport(loaded_at=self.state.started_at)
        self.runtime = build_runtime(config, self.hostname, self._host)
        # Raises ConfigError (exit 78) when the Lease's namespace cannot be known.
        self.election = Election(config.leader_election, self.state) if config.leader_election.enabled else None
        may_act = self.election.acting if self.election is not None else None
        self.cluster = self._cluster_inventory(config)
        self.reconciler = Reconciler(config, self.state, self.runtime, self.gitlab, lambda: self._host, metrics=self.metrics, may_act=may_act,
                                     cluster=self.cluster)  # fmt: skip
        self.api = ApiServer(self.state, config.api, self.metrics, hostname=self.hostname)
        self.webhook: WebhookListener | None = None
        if config.webhook.enabled:
            if secrets.webhook_secret is None:
                log.warning("webhook.enabled but no AUTOGIT_WEBHOOK_SECRET: the listener would refuse everything; not started")
            elif self.gitlab is None:
                # Detect-only: no job could be looked up or planned, so no port is opened for it.
                log.warning("webhook.enabled in detect-only mode (no gitlab.url or token): the listener is not started")
            else:
                self.webhook = WebhookListener(config.webhook, secrets.webhook_secret, self.state.bus, self._on_job_hook, self.metrics,
                                               in_scope=self._hook_in_scope, budget_low=self._hook_budget_low)  # fmt: skip
        self.state.reload_handler = self._reload
        self.state.bus.add_listener(self._on_event)
        # What operators asked for before this start (an upgrade never undoes a drain or a pause).
        self.state_file = StateFile(state_file_path(config))
        self.state.intents = self.state_file.load()
        self.state.on_intents = self.state_file.save
        self._stop = asyncio.Event()
        self._last_pass = time.monotonic()
        self._hotplug: HotplugWatcher | None = None

    # --- inventory ------------------------------------------------------------------------------
    def _observe_host(self) -> Host:
        """The first read, at start (before the loop serves anything), bounded all the same."""
        return self._host_from(self.gpus.observe_within(self.config.gpu.read_timeout))

    def _host_from(self, snapshots: list[GpuSnapshot]) -> Host:
        self._report_hung_reads()
        self._snapshots = snapshots
        self.state.gpu_readings = {s.gpu.id: s.reading for s in snapshots}
        gpus = [s.gpu for s in snapshots] + self._cluster_gpus
        previous = getattr(self, "_host", None)
        if previous is not None and "nvidia" in self.gpus.problems:
            # NVML broke (e.g. driver upgraded under us) while NVIDIA GPUs are still on the bus:
            # "unknown" is not "absent". Keep them, unhealthy: no new job lands on them, busy
            # runners drain, nothing is torn down as if the cards were gone.
            seen = {g.id for g in gpus}
            gpus += [
                g.model_copy(update={"healthy": False})
                for g in previous.gpus
                if g.vendor.value == "nvidia" and g.id not in seen and g.id not in self._cluster_gpu_ids
            ]
        return build_host(self.config, self.cpu, gpus, self.hostname)

    def _report_hung_reads(self) -> None:
        """One event when a vendor's GPU reads start or stop missing their deadline."""
        hung = {h.vendor: h for h in self.gpus.hung}
        was = self._hung_vendors
        for vendor in sorted(hung.keys() - was):
            line = hung[vendor].describe(time.monotonic())
            log.error("%s", line)
            self.state.bus.publish("gpu.read-hung", line, vendor=vendor)
        for vendor in sorted(was - hung.keys()):
            self.state.bus.publish("gpu.read-recovered", f"{vendor} GPU reads answer again", vendor=vendor)
        self._hung_vendors = set(hung)

    def refresh_host(self) -> None:
        """Hotplug, health or readings changed: read the GPUs again, off the loop (see
        _refresh_host). Callable from sync callbacks; reads never pile up: one runs at a time
        and a request during it makes it read once more."""
        self._refresh_wanted = True
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while self._refresh_wanted:
            self._refresh_wanted = False
            await self._refresh_host()

    async def _refresh_host(self) -> None:
        """Read the GPUs again in worker threads (bounded by gpu.read_timeout: a hung NVML read
        leaves the loop, the socket and the event stream serving); re-plan if the planner's view
        of them (the set, health, drains) changed."""
        host = self._host_from(await self.gpus.read(self.config.gpu.read_timeout))
        if host != self._host:
            for kind, message, data in mig_instance_changes(self._host.gpus, host.gpus):
                self.state.bus.publish(kind, message, **data)
            self._host = host
            self.state.wake.set()

    async def _watch_gpus(self) -> None:
        """Live readings (utilisation, memory, temperature, power) for the API, the metrics and
        the TUI, every `gpu.readings_interval` seconds; also catches a GPU that went bad
        between health events. A no-op on hosts without GPUs."""
        while not self._stop.is_set():
            await asyncio.sleep(self.config.gpu.readings_interval)
            if self._host.gpus:
                await self._refresh_host()

    def _cluster_inventory(self, config: AgentConfig) -> ClusterInventory | None:
        """runner.runtime kubernetes: the nodes and pods by watch (ADR-016); None elsewhere."""
        if config.runner.runtime != "kubernetes":
            return None
        from .inventory.cluster import ClusterInventory
        from .runtime.k8s_runtime import KubernetesRuntime

        assert isinstance(self.runtime, KubernetesRuntime)
        return ClusterInventory(config.runner.kubernetes, self.runtime.api_configuration, self.hostname, on_node_change=self._on_node_change)

    def _on_node_change(self, line: str) -> None:
        """A node added, removed or changed: re-plan now, as a hotplug event does on a host."""
        self.state.bus.publish("cluster.node-changed", line)
        self.state.wake.set()

    async def _start_cluster(self) -> None:
        if self.cluster is None:
            return
        try:
            await self.cluster.start()
        except AdapterError as exc:  # no kubeconfig / in-cluster credentials: passes say the inventory is unknown
            log.error("cluster inventory not started: %s", exc)
            return
        if not await self.cluster.wait_known(self.config.runner.kubernetes.request_timeout):
            log.warning("cluster inventory: %s", self.cluster.why_unknown())

    async def _read_cluster_gpus(self) -> None:
        """The cluster's GPUs as the Kubernetes runtime reads them; unknown (None) keeps the last
        view. A change re-plans at once."""
        if not isinstance(self.runtime, KubernetesRuntime):
            return
        try:
            read = await self.runtime.cluster_gpus()
        except Exception as exc:  # noqa: BLE001 - one failed read keeps the last view, like an unknown one
            log.warning("cluster GPUs not read: %s", exc)
            return
        if read is None or read == self._cluster_gpus:
            return
        self._cluster_gpus = read
        self._cluster_gpu_ids |= {g.id for g in read}
        self._host = self._host_from(self._snapshots)
        self.state.wake.set()

    async def _watch_cluster_gpus(self) -> None:
        """Every `runner.kubernetes.gpu_interval` seconds, with runner.runtime kubernetes (three
        list calls each: the API server's load does not follow the pass rate)."""
        while not self._stop.is_set():
            await asyncio.sleep(self.config.runner.kubernetes.gpu_interval)
            await self._read_cluster_gpus()

    # --- inputs -------------------------------------------------------------------------------
    def _hook_in_scope(self, project_id: int) -> bool:
        return self.gitlab is not None and self.gitlab.in_scope(project_id)

    def _hook_budget_low(self) -> bool:
        return self.gitlab is None or budget_low(self.gitlab.rate_limit)

    async def _on_job_hook(self, project_id: int, job_id: int, status: str) -> None:
        """One job lookup for an accepted hook (HookLookups decides whether and when), through
        the adapter: its retries, its timeouts and its RateLimit bookkeeping."""
        gitlab = self.gitlab  # a reload may replace the adapter meanwhile
        if gitlab is None:
            return
        try:
            status, job = await gitlab.get_job(project_id, job_id)
        except GitLabError as exc:
            self.state.bus.publish("webhook.fetch-failed", f"job {job_id} of project {project_id}: {exc}")
            return
        self.reconciler.hint_job(status, job)

    @staticmethod
    def _adapter(config: AgentConfig, secrets: Secrets) -> GitLabAdapter | None:
        if config.gitlab.url is None or secrets.gitlab_token is None:
            return None
        return GitLabAdapter(config.gitlab, secrets.gitlab_token)

    def _reload(self) -> str | None:
        try:
            new = load_config(self.config_path)
            secrets = load_secrets(previous=self._secrets)  # the environment lost its secrets at start
        except ConfigError as exc:
            log.error("reload refused, old config kept: %s", "; ".join(exc.lines))
            return exc.lines[0]
        old = self.config
        applied, _ = config_changes(old, new)
        _, restart_needed = config_changes(self._started, new)
        # Keys that need a restart keep their running value in every object built from here on.
        running = new.model_copy(update={
            "api": self._started.api, "webhook": self._started.webhook, "hostname": self._started.hostname, "state_file": self._started.state_file,
            "runner": new.runner.model_copy(update={"runtime": self._started.runner.runtime, "docker": new.runner.docker.model_copy(
                update={"docker_host": self._started.runner.docker.docker_host, "config_dir": self._started.runner.docker.config_dir}),
                "kubernetes": new.runner.kubernetes.model_copy(update={k: getattr(self._started.runner.kubernetes, k) for k in ("namespace", "kubeconfig", "context")})}),
            "gpu": new.gpu.model_copy(update={"cdi": self._started.gpu.cdi, "health_interval": self._started.gpu.health_interval}),
        })  # fmt: skip
        token_changed = secrets.gitlab_token != self._secrets.gitlab_token
        if token_changed:
            applied.append("AUTOGIT_GITLAB_TOKEN (secret)")
        self.config = running
        self.reconciler.config = running
        self.runtime.reconfigure(running)
        if token_changed or running.gitlab.model_copy(update={"poll_interval": 0}) != old.gitlab.model_copy(update={"poll_interval": 0}):
            # A new adapter for the new URL, scope, timeouts or token; the next pass polls in full.
            self.gitlab = self._adapter(running, secrets)
            self.metrics.watch_gitlab(self.gitlab)
            self.reconciler.gitlab = self.gitlab
            self.reconciler.poll_now()
        elif running.gitlab.poll_interval != old.gitlab.poll_interval:
            self.state.wake.set()  # the loop reads the new interval on its next turn
        self._secrets = secrets
        if running.gpu.vendors != old.gpu.vendors:
            self._rebuild_inventory(running)
        if running.gpu != old.gpu or running.hostname != old.hostname:
            self.refresh_host()  # ignore list, vendors: the planner's view of the GPUs
        if running.log_level != old.log_level:
            configure_logging(running.log_level)
        report = self.state.config
        self.state.config = ConfigReport(
            loaded_at=datetime.now(UTC), reloads=(report.reloads if report else 0) + 1, applied=applied, restart_needed=restart_needed
        )
        if restart_needed:
            log.warning("config reloaded, but these keys only apply after a restart (systemctl restart autogit-agent): %s", ", ".join(restart_needed))
        return None

    def _rebuild_inventory(self, config: AgentConfig) -> None:
        old = self.gpus
        self.gpus = GpuInventory(vendors=[GpuVendor(v) for v in config.gpu.vendors])
        self.gpus.health = old.health  # verdicts from health events stay
        if self._hotplug is not None:  # it watches through the inventory: watch the new one
            self._hotplug.stop()
            self._hotplug = None
            self._watch_hotplug()
        old.close()

    def _on_event(self, event: Event) -> None:
        log.info("%s %s", event.type, event.message)
        s = self.state
        counts: dict[str, int] = {}
        for r in s.runners:
            counts[r.state] = counts.get(r.state, 0) + 1
        runners = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no runners"
        waiting = len(s.plan.waiting) if s.plan else 0
        line = f"{s.phase.value}: {runners}; {len(s.jobs)} pending, {waiting} waiting"
        if s.phase is AgentPhase.DETECT_ONLY:
            line = "detect-only: set gitlab.url in /etc/autogit/agent.yaml and the token in /etc/autogit/gitlab-token (or agent.env)"
        elif s.phase is AgentPhase.DEGRADED:
            fault = s.gitlab.error if s.gitlab.ok is False else s.docker.error
            line = f"degraded: {fault}; {runners} kept"
        self.notifier.status(line)

    # --- lifecycle --------------------------------------------------------------------------------
    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while not self._stop.is_set():
            # Ping only while the loop makes progress: a wedged loop gets restarted by systemd.
            if self.progress_problem() is None:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    def progress_problem(self) -> str | None:
        """None while reconcile passes complete; else why not, in one line. systemd's watchdog
        and the probes' /healthz (agent/health.py) both follow it."""
        healthy_within = max(3 * self.config.gitlab.poll_interval, 60)  # a reload may change it
        since = time.monotonic() - self._last_pass
        if since < healthy_within:
            return None
        return f"no reconcile pass completed for {since:.0f} s (the limit is {healthy_within:.0f} s)"

    def _mark_pass(self, seconds: float) -> None:
        self._last_pass = time.monotonic()
        self.metrics.reconcile_seconds.observe(seconds)

    async def _start_hotplug(self) -> None:
        self._watch_hotplug()

    def _watch_hotplug(self) -> None:
        try:
            from .inventory.hotplug import HotplugWatcher
        except ImportError as exc:  # pyudev missing from a minimal install: run without hotplug
            log.warning("hotplug disabled: %s", exc)
            return
        try:
            self._hotplug = HotplugWatcher(self.state.bus, self.refresh_host, asyncio.get_running_loop(), inventory=self.gpus)
            self._hotplug.start()
        except Exception as exc:  # no udev (containers): the inventory is still read at start and on reload
            log.warning("hotplug disabled: %s", exc)
            self._hotplug = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        # Out of descriptors, asyncio reports every failed accept() with a traceback (up to 100 a
        # loop turn): one line with a count instead (agent/tcp_guard.py).
        install_accept_error_log(loop, on_error=self.metrics.accept_errors.inc)
        caps = {"api.max_connections": self.config.api.max_connections}
        if self.webhook is not None:
            caps["webhook.max_connections"] = self.config.webhook.max_connections
        if self.config.api.metrics_listen:
            caps["metrics"] = METRICS_LIMITS.max_connections
        if self.config.api.health_listen:
            caps["health"] = HEALTH_LIMITS.max_connections
        shortfall = descriptor_shortfall(caps)
        if shortfall is not None:
            log.warning("%s", shortfall)
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.reconciler.on_pass = self._mark_pass
        self.state.bus.publish("agent.starting", f"autogit-agent starting on {self.hostname} ({self._host.arch}, {len(self._host.gpus)} GPU(s))")
        if self.state.intents != Intents():
            self.state.bus.publish("intents.restored", f"operator intents restored from {self.state_file.path}: {describe(self.state.intents)}")
        election_task: asyncio.Task[None] | None = None
        if self.election is not None:
            await self.election.connect()  # ConfigError: exit 78 (run_agent)
            election_task = asyncio.create_task(self.election.run())
        await self.api.start()
        await self._start_hotplug()
        await self._start_cluster()
        if self.webhook is not None:
            await self.webhook.start()
        metrics_site = await start_metrics_listener(self.metrics, self.config.api.metrics_listen) if self.config.api.metrics_listen else None
        health_site = await start_health_listener(
            self.config.api.health_listen, self.progress_problem,
            on_refused=lambda reason: self.metrics.tcp_refused.labels(listener="health", reason=reason).inc(),
        ) if self.config.api.health_listen else None  # fmt: skip
        await self._read_cluster_gpus()
        await self.reconciler.reconcile_once(full_poll=True)
        self._last_pass = time.monotonic()
        self.notifier.ready()
        # Published once; the bus listener (_on_event) logs it and sets STATUS= like any event.
        self.state.bus.publish("agent.ready", f"agent ready ({self.state.phase.value})")
        loop_task = asyncio.create_task(self.reconciler.run_forever())
        watchdog_task = asyncio.create_task(self._watchdog())
        gpu_task = asyncio.create_task(self._watch_gpus())
        cluster_gpu_task = asyncio.create_task(self._watch_cluster_gpus()) if isinstance(self.runtime, KubernetesRuntime) else None
        await self._stop.wait()

        self.notifier.stopping()
        self.state.set_phase(AgentPhase.STOPPING, "SIGTERM")
        self.reconciler.stop()
        try:
            await asyncio.wait_for(loop_task, timeout=self.config.stop_timeout)
        except TimeoutError:
            log.warning("the pass in flight did not finish within %ss; stopping anyway", self.config.stop_timeout)
        watchdog_task.cancel()
        gpu_task.cancel()
        if cluster_gpu_task is not None:
            cluster_gpu_task.cancel()
        if election_task is not None and self.election is not None:
            election_task.cancel()
            await self.election.stop()  # hands the Lease back: the other replica leads at its next retry
        if self._hotplug is not None:
            self._hotplug.stop()
        if self.webhook is not None:
            await self.webhook.stop()
        for site in (metrics_site, health_site):
            if site is not None:
                await site.cleanup()
        await self.api.stop()
        if self.cluster is not None:
            await self.cluster.close()
        await self.runtime.close()
        self.gpus.close()
        self.state.bus.close()
        return 0

    def _on_sighup(self) -> None:
        self.notifier.reloading()
        self.state.reload("SIGHUP")
        self.notifier.ready()


def run_agent(config_path: Path | None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 78
    configure_logging(config.log_level)
    try:
        return asyncio.run(_run(config, config_path))
    except ConfigError as exc:  # leader_election found unusable at start (namespace, kubeconfig)
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 78


async def _run(config: AgentConfig, config_path: Path | None) -> int:
    return await Agent(config, config_path).run()
