"""Which replica acts: leader election through a coordination.k8s.io Lease (ADR-014).

The election itself is kubernetes_asyncio's (`kubernetes_asyncio.leaderelection`, a port of
client-go's: acquire or renew the Lease every `retry_period`, give up leading when a renewal has
not succeeded for `renew_deadline`, take a Lease over only when its holder has not renewed it for
`lease_duration` as this replica observed it). Three things are added here, because the agent
must never act twice for one job:

1. **Every Lease call has a deadline** (`call_timeout`). A leader cut off from the API server
   would otherwise wait on one renewal for as long as TCP allows, and keep "leading" while its
   Lease expires and the other replica takes over. Transport errors count as a failed attempt
   instead of ending the election (the library only expects API errors).
2. **Acting is bounded by the last renewal, on this replica's monotonic clock.** `acting` is
   true only while the last successful acquire/renew is younger than `renew_deadline`. The
   other replica can take over only `lease_duration` after it last saw the Lease change, which
   is after that renewal; with renew_deadline < lease_duration the old leader has stopped
   acting before the new one can start, whatever the library's loop is doing at that moment
   and with no trust in wall clocks across machines.
3. **A leader that stops cleanly hands the Lease back** (`release`): the follower takes over at
   its next retry instead of waiting out the Lease.

The agent's loop asks `acting` before each pass's actions; a follower observes and serves
status (and says who leads).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection.electionconfig import Config
from kubernetes_asyncio.leaderelection.leaderelection import LeaderElection
from kubernetes_asyncio.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

__all__ = ["LEADER_RULES", "Leadership"]

log = logging.getLogger(__name__)

_TRANSPORT = (TimeoutError, aiohttp.ClientError, OSError)

# What the election calls, as RBAC (api group, resources, verbs): read_namespaced_lease, create, replace.
# The chart's leader Role grants exactly this (tests/k8s/test_chart.py).
LEADER_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (("coordination.k8s.io", ("leases",), ("get", "create", "update")),)


def _unreachable(exc: BaseException) -> ApiException:
    """A transport failure in the shape the library reads an API error in (it parses `body`)."""
    error = ApiException(status=503, reason=f"API server unreachable: {type(exc).__name__}")
    error.body = json.dumps({"code": 503, "message": str(exc)}).encode()
    return error


class _DeadlineLeaseLock(LeaseLock):
    """The library's LeaseLock, each call bounded by a deadline; records successful writes."""

    def __init__(
        self, name: str, namespace: str, identity: str, api_client: ApiClient, timeout: float, on_written: Callable[[], None]
    ) -> None:
        super().__init__(name, namespace, identity, api_client)
        self._timeout = timeout
        self._on_written = on_written

    async def get(self, name: str, namespace: str) -> Any:
        try:
            return await asyncio.wait_for(super().get(name, namespace), self._timeout)
        except _TRANSPORT as exc:
            return False, _unreachable(exc)

    async def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        return await self._write("create", namespace, name, super().create(name, namespace, election_record))

    async def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        return await self._write("renew", namespace, name, super().update(name, namespace, updated_record))

    async def _write(self, what: str, namespace: str, name: str, call: Coroutine[Any, Any, bool]) -> bool:
        """One create or renew within the deadline; a success is the moment acting counts from."""
        try:
            ok = await asyncio.wait_for(call, self._timeout)
        except _TRANSPORT as exc:
            log.warning("Lease %s/%s: %s failed: %s", namespace, name, what, type(exc).__name__)
            return False
        if ok:
            self._on_written()
        return ok


class Leadership:
    """This replica's part in the election; `acting` says whether it may act now."""

    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not renew_deadline < lease_duration:
            raise ValueError("leader.renew_deadline must be shorter than leader.lease_duration")
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._api = api_client
        self._clock = clock
        self._on_change = on_change
        self._elected = False
        self._renewed: float | None = None  # monotonic time of the last successful acquire/renew
        self._was_acting = False
        self._election: LeaderElection | None = None
        # Each call must end well within one retry period, so that a renewal is tried again
        # (and, when the server is gone, given up) on time.
        self._lock = _DeadlineLeaseLock(name, namespace, identity, api_client, retry_period * 0.8, self._written)

    # --- state ------------------------------------------------------------------------------
    def _written(self) -> None:
        self._renewed = self._clock()
        self._notify()

    def _acting_now(self) -> bool:
        return self._elected and self._renewed is not None and self._clock() - self._renewed < self.renew_deadline

    @property
    def acting(self) -> bool:
        """Elected, and the last renewal is younger than renew_deadline by this clock."""
        self._notify()
        return self._was_acting

    @property
    def holder(self) -> str | None:
        """The Lease holder as this replica last read it (None: not read yet, or released)."""
        record = self._election.observed_record if self._election is not None else None
        return record.holder_identity if record is not None else None

    def _notify(self) -> None:
        acting = self._acting_now()
        if acting != self._was_acting:
            self._was_acting = acting
            log.info("%s %s", self.identity, "leads: acting" if acting else "does not lead: observing only")
            if self._on_change is not None:
                self._on_change(acting)

    # --- the election -----------------------------------------------------------------------
    async def run(self) -> None:
        """Stand for election for good: lead while the Lease holds, then stand again."""
        while True:
            self._election = LeaderElection(
                Config(self._lock, self.lease_duration, self.renew_deadline, self.retry_period, self._lead, self._stopped)
            )
            try:
                await self._election.run()
            finally:
                self._elected = False
                self._notify()
            await asyncio.sleep(self.retry_period)

    async def _lead(self) -> None:
        self._elected = True
        self._notify()
        await asyncio.Event().wait()  # cancelled by the library when the Lease is lost

    async def _stopped(self) -> None:
        self._elected = False
        self._notify()

    async def release(self) -> bool:
        """Hand the Lease back (a clean stop): empty its holder if it is still ours, so that
        the other replica acquires it at its next retry. False if it was not ours or the
        server did not answer in time."""
        self._elected = False
        self._notify()
        api = CoordinationV1Api(api_client=self._api)
        try:
            lease = await asyncio.wait_for(api.read_namespaced_lease(self.name, self.namespace), self.retry_period)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return False
            lease.spec.holder_identity = None  # type: ignore[assignment]  # the API's "no holder"
            await asyncio.wait_for(api.replace_namespaced_lease(self.name, self.namespace, lease), self.retry_period)
            return True
        except (ApiException, *_TRANSPORT) as exc:
            log.warning("Lease %s/%s not released: %s", self.namespace, self.name, exc)
            return False
