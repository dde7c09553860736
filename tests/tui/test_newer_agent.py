"""An old client against a newer agent: a real agent API server, seen through a proxy that adds
fields to every object of every answer (every depth, every event), as a later v1 agent may. The
client's models, the TUI's data layer and screens, and `autogit-agent status` must read and show
exactly what they show against the agent itself (docs/api/README.md, "Version and compatibility")."""

from __future__ import annotations

import asyncio
import difflib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tui_harness import AgentServer, build_app, make_state, socket_dir, svg_text, wait_until

from autogit.agent.api.client import AgentClient
from autogit.agent.api.openapi import ROUTES, openapi_document
from autogit.tui.widgets.events import EventLog

_SCHEMAS = openapi_document()["components"]["schemas"]
_ADDED = {"added_by_newer_agent": {"note": "a later v1 field", "depth": [1, {"nested": True}]}, "zz_extra": None}


def _resolve(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    """The (sub)schema that describes `value`: follows $ref and picks the object branch of anyOf."""
    while True:
        if "$ref" in schema:
            schema = _SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in schema:
            kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
            schema = next((s for s in kinds if isinstance(value, dict) == ("$ref" in s or s.get("type") == "object")), kinds[0])
        else:
            return schema


def newer(value: Any, schema: dict[str, Any], counter: list[int]) -> Any:
    """`value` with new fields added to every object the schema defines (not to maps such as
    counts.runners or an event's free-form data, whose keys are data, not fields)."""
    schema = _resolve(schema, value)
    if isinstance(value, list):
        return [newer(item, schema.get("items", {}), counter) for item in value]
    if not isinstance(value, dict):
        return value
    if "properties" in schema:
        out = {k: newer(v, schema["properties"].get(k, {}), counter) for k, v in value.items()}
        counter[0] += 1
        return {**out, **_ADDED}
    values = schema.get("additionalProperties")
    return {k: newer(v, values if isinstance(values, dict) else {}, counter) for k, v in value.items()}


class NewerAgent:
    """A unix-socket HTTP proxy in front of the real server that adds fields on the way out."""

    def __init__(self, agent: AgentServer, directory: Path) -> None:
        self.agent = agent
        self.path = str(directory / "newer.sock")
        self.objects_added = [0]
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[asyncio.Task[Any]] = set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        route = next((r for r in ROUTES if r.method == request.method and r.path == request.path), None)
        async with self._session.request(request.method, request.path_qs, data=await request.read()) as up:
            if route is None or route.response is None or up.status >= 400:
                return web.Response(status=up.status, body=await up.read(), content_type=up.content_type)
            schema = {"$ref": f"#/components/schemas/{route.response}"}
            if route.content_type == "application/x-ndjson":
                resp = web.StreamResponse(headers={"Content-Type": route.content_type})
                await resp.prepare(request)
                me = asyncio.current_task()
                assert me is not None
                self._streams.add(me)
                try:
                    async for line in up.content:
                        body = json.dumps(newer(json.loads(line), schema, self.objects_added)).encode() + b"\n" if line.strip() else line
                        await resp.write(body)
                except (ConnectionError, asyncio.CancelledError):
                    pass  # the client went away, or the proxy is closing
                finally:
                    self._streams.discard(me)
                return resp
            body = newer(json.loads(await up.read()), schema, self.objects_added)
            return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    def start(self) -> NewerAgent:
        async def boot() -> None:
            self._session = aiohttp.ClientSession(base_url="http://autogit", connector=aiohttp.UnixConnector(path=self.agent.path))
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            await web.UnixSite(self._runner, self.path).start()

        self.agent.run(boot())
        return self

    def close(self) -> None:
        async def down() -> None:
            for task in list(self._streams):
                task.cancel()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        self.agent.run(down())


@pytest.fixture(scope="module")
def agents() -> Iterator[tuple[AgentServer, NewerAgent]]:
    directory = socket_dir()
    agent = AgentServer(make_state(), directory).start()
    proxy = NewerAgent(agent, directory).start()
    yield agent, proxy
    proxy.close()
    agent.close()


async def _read_all(path: str) -> dict[str, Any]:
    async with AgentClient(path) as client:
        out: dict[str, Any] = {name: await getattr(client, name)() for name in ("status", "gpus", "runners", "jobs", "plan", "fleet")}
        events = []
        async for event in client.events(since=0):
            events.append(event)
            if event.seq >= out["status"].last_event_seq:
                break
        out["events"] = events
        return out


async def test_the_client_reads_the_same_models_from_a_newer_agent(agents) -> None:
    agent, proxy = agents
    before = proxy.objects_added[0]
    plain, extended = await _read_all(agent.path), await _read_all(proxy.path)
    assert proxy.objects_added[0] - before > 50  # every GPU, host, runner, job, plan entry, event ...
    assert extended == plain
    # The scenario reaches every kind of nested object the wire has.
    assert plain["status"].host.gpus and plain["plan"].plan.start and plain["plan"].plan.waiting and plain["plan"].plan.served
    assert any(v.wait is not None and v.wait.missing_tags for v in plain["jobs"].jobs)
    assert any(r.reading is not None for r in plain["gpus"].gpus) and len(plain["events"]) == 6


async def _screens(path: str, size: tuple[int, int]) -> list[str]:
    app = build_app(path)
    app.animation_level = "none"  # the tab underline slides: frames must not depend on timing
    frames = []
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.connection == "connected" and app.jobs is not None and app.fleet is not None
                         and len(app.screen.query_one("#event-log", EventLog).events) == 6, what="the first load")
        await pilot.pause(0.1)
        for tab in "12345":
            await pilot.press(tab)
            await pilot.pause(0.1)
            frames.append(svg_text(app.export_screenshot()))
    return frames


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
async def test_the_console_renders_a_newer_agent_exactly_as_the_agent_itself(agents, size) -> None:
    agent, proxy = agents
    plain = await _screens(agent.path, size)
    extended = await _screens(proxy.path, size)
    assert "gpu-box-1" in plain[0] and "H100" in plain[0] and "no-matching-hardware" in plain[2]
    for tab, (a, b) in enumerate(zip(plain, extended, strict=True), start=1):
        diff = "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0))
        assert a == b, f"tab {tab} renders differently against the newer agent:\n{diff[:3000]}"


@pytest.mark.parametrize("json_flag", [False, True], ids=["text", "json"])
async def test_autogit_agent_status_reads_a_newer_agent(agents, json_flag: bool) -> None:
    agent, proxy = agents

    def status(path: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "autogit.agent.cli", "status", "--socket", path] + (["--json"] if json_flag else [])
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    plain, extended = await asyncio.gather(asyncio.to_thread(status, agent.path), asyncio.to_thread(status, proxy.path))
    assert plain.returncode == 0, plain.stderr
    assert extended.returncode == 0, extended.stderr
    assert ('"arch": "amd64"' if json_flag else "gpu-box-1: amd64") in plain.stdout
    assert extended.stdout == plain.stdout
