"""The `leader_election` config section made real: the API client, this replica's identity and
the Lease's namespace, and a Leadership (agent/leader.py) that keeps AgentState's role current.
The daemon runs it; the reconciler asks `acting` before each action (ADR-014)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException

from .config import ConfigError, LeaderElectionConfig
from .leader import Leadership
from .state import AgentState

__all__ = ["SERVICE_ACCOUNT_NAMESPACE", "Election", "identity_of", "namespace_of"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def identity_of(cfg: LeaderElectionConfig, environ: dict[str, str] | None = None) -> str:
    """leader_election.identity, else POD_NAME (the chart sets it from the downward API), else the host's name."""
    env = os.environ if environ is None else environ
    return cfg.identity or env.get("POD_NAME") or socket.gethostname()


def namespace_of(cfg: LeaderElectionConfig, environ: dict[str, str] | None = None, sa_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """leader_election.namespace, else POD_NAMESPACE, else the pod's service-account namespace."""
    env = os.environ if environ is None else environ
    if cfg.namespace:
        return cfg.namespace
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        return sa_file.read_text().strip()
    except OSError:
        raise ConfigError(["leader_election.namespace: not set, and neither POD_NAMESPACE nor a pod's service-account namespace to default to"]) from None


class Election:
    """This replica's part: `connect()`, then `run()` stands for good; `acting` gates each action; `stop()`
    hands the Lease back (SIGTERM) and closes the client."""

    def __init__(self, cfg: LeaderElectionConfig, state: AgentState) -> None:
        self.cfg = cfg
        self.state = state
        self.identity = identity_of(cfg)
        self.namespace = namespace_of(cfg)
        self._api: ApiClient | None = None
        self.leadership: Leadership | None = None

    async def connect(self) -> None:
        """The API client from leader_election.kubeconfig, else the in-cluster config; ConfigError if neither loads."""
        configuration = Configuration()
        if self.cfg.kubeconfig is not None and not self.cfg.kubeconfig.is_file():
            raise ConfigError([f"leader_election.kubeconfig: {self.cfg.kubeconfig}: no such file"])
        try:
            if self.cfg.kubeconfig is not None:
                await kube_config.load_kube_config(config_file=str(self.cfg.kubeconfig), client_configuration=configuration, persist_config=False)
            else:
                kube_config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            field = "leader_election.kubeconfig" if self.cfg.kubeconfig is not None else "leader_election.kubeconfig (unset: in-cluster config)"
            raise ConfigError([f"{field}: cannot load: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]) from None
        self._api = ApiClient(configuration)
        self.leadership = Leadership(
            self._api, self.namespace, self.cfg.lease_name, self.identity, lease_duration=self.cfg.lease_duration,
            renew_deadline=self.cfg.renew_deadline, retry_period=self.cfg.retry_period, on_change=self._changed,
        )  # fmt: skip
        self.state.start_electing(self.identity, f"{self.namespace}/{self.cfg.lease_name}")

    def _changed(self, acting: bool) -> None:
        assert self.leadership is not None
        self.state.set_leadership(acting, self.leadership.holder)
        self.state.wake.set()  # a new leader plans at once; a lost one shows it at once

    def acting(self) -> bool:
        """Whether this replica may act now; keeps the holder shown in status current."""
        if self.leadership is None:
            return False
        acting = self.leadership.acting
        self.state.set_leadership(acting, self.leadership.holder)
        return acting

    async def run(self) -> None:
        """Stand for good. A failure inside the election (a bug, an answer it cannot read) is
        logged and the replica stands again a retry period later: it follows meanwhile, never
        acts on a stale win."""
        assert self.leadership is not None
        said = None  # the same failure is logged once, not every retry period
        while True:
            try:
                await self.leadership.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if repr(exc) != said:
                    said = repr(exc)
                    log.exception("leader election failed; standing again every %.0f s (following meanwhile)", self.cfg.retry_period)
            await asyncio.sleep(self.cfg.retry_period)

    async def stop(self) -> None:
        """A clean stop: hand the Lease back so that the other replica takes over at its next retry."""
        if self.leadership is not None and await self.leadership.release():
            self.state.set_leadership(False, None)
        if self._api is not None:
            await self._api.close()
