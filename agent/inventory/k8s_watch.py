"""An informer: one kind of Kubernetes object kept in memory by LIST then WATCH (ADR-016).

The reflector's protocol (client-go tools/cache/reflector.go, docs "Efficient detection of
changes"): LIST once and remember the list's `resourceVersion`; WATCH from it
(`allowWatchBookmarks`, a server-side `timeoutSeconds`), applying ADDED/MODIFIED/DELETED to the
cache and moving the version on with every event and BOOKMARK; when a watch ends (its timeout,
the connection closed) WATCH again from the last version; when the API server answers 410 Gone
("too old resource version", as an ERROR event or a status) the version is lost: LIST again.
A failed request (the API server unreachable, a stream cut) is retried from the last version,
backing off (doubling, bounded), never a storm; after a long outage that version is usually too
old, and the 410 brings the LIST.

A reader gets the objects from memory: however often the agent's loop reads them, the API server
sees one LIST at start, one WATCH per `watch_timeout`, and a LIST after each expiry (410).

Unknown stays unknown: `known` is False before the first LIST completes, and again once the
informer has failed to list or watch for longer than `stale_after` seconds (a watch that is
merely quiet is not broken: it is renewed every `watch_timeout` and the client times out a
connection that hangs past that). The objects are typed models that ignore unknown fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

__all__ = ["ApiCounter", "Informer", "ListCall"]

log = logging.getLogger("autogit.k8s.watch")

M = TypeVar("M", bound=BaseModel)
# The generated client's list call with its filters bound (e.g. partial(api.list_node, label_selector=...)).
ListCall = Callable[..., Awaitable[Any]]


@dataclass
class ApiCounter:
    """Every request an ApiClient sends, counted at its REST transport by verb (LIST and WATCH
    told apart by the `watch` query parameter) and path: what the API server sees."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def attach(self, client: Any) -> None:
        """Wrap `client.rest_client.request` (kubernetes_asyncio's single path to aiohttp)."""
        rest = client.rest_client
        send = rest.request

        async def counted(method: str, url: str, query_params: Any = None, *args: Any, **kwargs: Any) -> Any:
            params = dict(query_params or [])
            verb = "watch" if str(params.get("watch", "")).lower() == "true" else "list" if method == "GET" else method.lower()
            path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
            key = (verb, "/" + path)
            self.counts[key] = self.counts.get(key, 0) + 1
            return await send(method, url, query_params, *args, **kwargs)

        rest.request = counted

    def total(self, verb: str | None = None) -> int:
        return sum(n for (v, _), n in self.counts.items() if verb is None or v == verb)


class _Expired(Exception):
    """410 Gone: the resourceVersion is too old to watch from; LIST again."""


async def _answered(response: Any) -> None:
    """Raise for a refusal (unread with `_preload_content=False`, the client raises nothing)."""
    if 200 <= response.status <= 299:
        return
    if response.status == 410:
        raise _Expired()
    error = ApiException(status=response.status, reason=response.reason)
    error.body = await response.read()  # the API server's Status: translate() reads its message
    raise error


class Informer(Generic[M]):
    """Objects of one LIST/WATCH call, by key, kept current; `on_change(key, before, after)` is
    called for each object whose typed model changed (before None: added; after None: deleted)."""

    def __init__(self, name: str, call: ListCall, model: type[M], key: Callable[[dict[str, Any]], str], *,
                 on_change: Callable[[str, M | None, M | None], None] | None = None, watch_timeout: int = 300,
                 stale_after: float = 60.0, request_timeout: float = 30.0, backoff: tuple[float, float] = (0.5, 30.0),
                 monotonic: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.name = name
        self._call = call
        self._model = model
        self._key = key
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.stale_after = stale_after
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.monotonic = monotonic
        self.items: dict[str, M] = {}
        self.generation = 0  # bumped on every change of `items`: readers cache what they derive
        self.synced = False  # the first LIST completed
        self.resource_version: str | None = None
        self.broken_since: float | None = None  # monotonic: the first failure since the last success
        self.error: str | None = None
        self.lists = self.watches = 0
        self.problems: dict[str, str] = {}  # objects the model refused, one line each (by key)

    # --- what readers see -------------------------------------------------------------------------
    @property
    def known(self) -> bool:
        """The cache says what the cluster holds: listed, and not failing for longer than stale_after."""
        if not self.synced:
            return False
        return self.broken_since is None or self.monotonic() - self.broken_since <= self.stale_after

    def why_unknown(self) -> str | None:
        if not self.synced:
            return f"{self.name}: not listed yet" + (f" ({self.error})" if self.error else "")
        if not self.known:
            return f"{self.name}: no list or watch has succeeded for {self.monotonic() - (self.broken_since or 0):.0f} s ({self.error})"
        return None

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """LIST, then WATCH until the version expires or the connection fails, forever."""
        delay = self.backoff[0]
        listed = False  # whether the version in hand came from this informer's own LIST or events
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                await self._watch()  # to its timeout or the connection's end: renew from the last version
                delay = self.backoff[0]
            except asyncio.CancelledError:
                raise
            except _Expired:
                log.info("%s: resourceVersion %s expired (410 Gone); listing again", self.name, self.resource_version)
                listed = False
            except Exception as exc:  # the API server unreachable, refused, a broken stream: watch again from the version
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    def _failed(self, exc: BaseException) -> None:
        from ..runtime.k8s_errors import translate  # the one error tree's wording (403 names the verb and resource)

        error = translate(exc, f"watching {self.name}", verb="watch", resource=self.name) if not isinstance(exc, ValueError) else exc
        self.error = str(error)
        if self.broken_since is None:
            self.broken_since = self.monotonic()
            log.warning("%s: %s; retrying with backoff", self.name, self.error)

    def _ok(self) -> None:
        if self.broken_since is not None:
            log.info("%s: listing and watching again", self.name)
        self.broken_since = None
        self.error = None

    async def _list(self) -> None:
        self.lists += 1
        response = await self._call(_preload_content=False, _request_timeout=self.request_timeout)
        try:
            await _answered(response)
            body = json.loads(await response.read())
        finally:
            response.release()
        fresh: dict[str, M] = {}
        problems: dict[str, str] = {}
        for raw in body.get("items") or []:
            key, model = self._parse(raw, problems)
            if model is not None:
                fresh[key] = model
        self.problems = problems
        before = self.items
        self.items = fresh
        self.resource_version = (body.get("metadata") or {}).get("resourceVersion")
        self.synced = True
        self._ok()
        for key in before.keys() | fresh.keys():
            self._changed(key, before.get(key), fresh.get(key))

    def _parse(self, raw: dict[str, Any], problems: dict[str, str]) -> tuple[str, M | None]:
        key = self._key(raw)
        try:
            return key, self._model.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            problems[key] = f"{self.name} {key}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}; ignored"
            return key, None

    async def _watch(self) -> None:
        self.watches += 1
        response = await self._call(watch=True, resource_version=self.resource_version, allow_watch_bookmarks=True,
                                    timeout_seconds=self.watch_timeout, _preload_content=False,
                                    _request_timeout=self.watch_timeout + self.request_timeout)  # fmt: skip
        try:
            await _answered(response)
            self._ok()  # connected: the cache is current from here on
            while line := await response.content.readline():
                self._apply(json.loads(line))
        finally:
            response.release()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, raw = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if raw.get("code") == 410:
                raise _Expired()
            raise ValueError(f"watch error {raw.get('code')}: {raw.get('reason')}: {raw.get('message')}")
        self.resource_version = (raw.get("metadata") or {}).get("resourceVersion") or self.resource_version
        if kind == "BOOKMARK":
            return
        key, model = self._parse(raw, self.problems)
        before = self.items.get(key)
        if kind == "DELETED" or model is None:
            self.items.pop(key, None)
            if kind == "DELETED":
                self.problems.pop(key, None)
            model = None
        else:
            self.problems.pop(key, None)
            self.items[key] = model
        self._changed(key, before, model)

    def _changed(self, key: str, before: M | None, after: M | None) -> None:
        if before == after:
            return  # e.g. a node's heartbeat: nothing the models read
        self.generation += 1
        if self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change(key, before, after)
