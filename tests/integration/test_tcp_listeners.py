"""The agent's TCP listeners (the webhook, /metrics) against what anyone who reaches the port can
send, with no token: floods of idle connections, floods of refused calls, bad input (issue 24,
items 1, 4, 5, 6). The agent is the real `autogit-agent run` process, as systemd runs it (its
open-file limit lowered to systemd's default soft limit, 1,024), against the GitLab double;
everything is on loopback and every loop is bounded."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from autogit.agent.api.client import AgentClient
from autogit.agent.config import GitLabConfig, GitLabScope, WebhookConfig
from autogit.agent.events import EventBus
from autogit.agent.gitlab.adapter import GitLabAdapter
from autogit.agent.gitlab.hook_lookups import budget_low
from autogit.agent.gitlab.webhook import WebhookListener
from autogit.agent.health import start_health_listener
from autogit.agent.metrics import AgentMetrics, start_metrics_listener
from autogit.agent.tcp_guard import ConnectionLimits, install_accept_error_log
from autogit.gitlab_double import GitLabSimulator
from waiting import until

EXE = Path(sys.executable).parent / "autogit-agent"
SECRET = "a-webhook-secret-of-thirty-two-chars"
# Tags no host here has: the job waits (no-matching-hardware) and no runner is ever started.
UNSERVABLE = ["tcp-guard-test-no-such-hardware"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class ListeningAgent:
    """`autogit-agent run` with its webhook and metrics listeners on loopback ports."""

    def __init__(self, tmp: Path, gitlab_url: str | None, token: str | None, nofile: int = 1024, **sections: dict) -> None:
        self.dir = tmp
        self.socket = tmp / "agent.sock"
        self.log = tmp / "agent.log"
        self.webhook_port, self.metrics_port, self.health_port = free_port(), free_port(), free_port()
        config: dict = {
            "hostname": f"tcp{uuid.uuid4().hex[:6]}",
            "fleet": {"enabled": False},
            "gpu": {"vendors": []},
            "runner": {"docker": {"config_dir": str(tmp / "runners")}},
            "state_file": str(tmp / "state.json"),
            "api": {"socket": str(self.socket), "group": "nonexistent-group", "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                    "health_listen": f"127.0.0.1:{self.health_port}"},
            "webhook": {"enabled": True, "listen": f"127.0.0.1:{self.webhook_port}"},
        }
        if gitlab_url is not None:
            config["gitlab"] = {"url": gitlab_url, "scope": {"kind": "projects", "projects": [1]}, "poll_interval": 1, "max_retries": 0,
                                "request_timeout": 3}  # fmt: skip
        for name, values in sections.items():
            config[name] = {**config.get(name, {}), **values}
        (tmp / "agent.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOGIT_", "NOTIFY_SOCKET", "WATCHDOG_", "UMOCKDEV_DIR", "LD_PRELOAD"))}
        env["AUTOGIT_WEBHOOK_SECRET"] = SECRET
        if token is not None:
            env["AUTOGIT_GITLAB_TOKEN"] = token

        def limit_fds() -> None:  # systemd's default soft limit (or lower), in the agent only
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(EXE), "run", "--config", str(tmp / "agent.yaml")], env=env, stdout=out,
                                            stderr=subprocess.STDOUT, preexec_fn=limit_fds)  # fmt: skip
        until(lambda: self.status() is not None, 60, "the agent's socket API", self.tail)

    def status(self) -> dict | None:
        out = subprocess.run([str(EXE), "status", "--json", "--socket", str(self.socket)], capture_output=True, text=True, timeout=20)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def metrics(self) -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if needle in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def agent(gitlab_sim, tmp_path):
    a = ListeningAgent(tmp_path, gitlab_sim.url, gitlab_sim.private_token)
    until(lambda: _listening(a.webhook_port), 30, "the webhook listener", a.tail)
    yield a
    a.stop()


def _metric(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def _job_lookups(sim) -> int:
    return sum(n for route, n in sim.calls.items() if route.startswith("GET ") and route.endswith("/jobs/{jid}"))


def _listening(port: int) -> bool:
    try:
        _connect(port).close()
    except ConnectionRefusedError:
        return False
    return True


def _connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


# --- item 1: floods of idle connections --------------------------------------------------------


def test_idle_connection_flood_leaves_the_socket_api_and_metrics_answering(agent):
    """1,100 idle connections to the webhook port, from 40 loopback addresses, no token: the
    agent (open-file limit 1,024) holds at most webhook.max_connections (128) of them, closes
    the rest at once, and its socket API and /metrics keep answering."""
    _raise_own_fd_limit(4096)
    before = agent.fds()
    began = time.monotonic()
    held: list[socket.socket] = []

    def refused() -> float:
        m = agent.metrics()
        return sum(_metric(m, "autogit_tcp_refused_connections_total", listener="webhook", reason=r) for r in ("connections", "per-address"))

    try:
        for i in range(1, 1101):
            held.append(_connect(agent.webhook_port, f"127.0.0.{2 + i % 40}"))
            if i % 50 == 0 and i > 128:
                # In steps the agent keeps up with: connections the kernel completed faster than
                # the agent accepts wait in the listen backlog, and past it in SYN-RECV, where a
                # loaded machine can drop them before the agent ever sees (and counts) them.
                until(lambda i=i: refused() >= i - 128, 30, f"the refusals of {i} connections to be counted", agent.tail)
        until(lambda: refused() >= 1100 - 128, 30, "the refusals to be counted", agent.tail)
        metrics = agent.metrics()
        assert agent.fds() <= before + 128 + 32  # the held connections, a few of the agent's own (GitLab, Docker)
        assert agent.status() is not None  # the socket API answers
        assert _metric(metrics, "autogit_tcp_refused_connections_total", listener="webhook", reason="connections") >= 1100 - 128
        assert agent.lines("out of system resource") == [] and agent.lines("Traceback") == []
        # one line per 10 s, with the count
        assert 1 <= len(agent.lines("webhook listener: refused")) <= 1 + (time.monotonic() - began) // 10
    finally:
        for s in held:
            s.close()
    until(lambda: agent.fds() <= before + 16, 30, "the held connections to be released", agent.tail)


def test_accept_errors_are_one_line_with_a_count(tmp_path):
    """Out of descriptors (the caps set above the open-file limit on purpose), asyncio's accept
    loop reports every failed accept(), up to 100 a loop turn, each with a traceback: the agent
    logs one line with a count per 10 s, and serves again once the flood is gone."""
    _raise_own_fd_limit(4096)
    with GitLabSimulator().running_in_thread() as sim:
        a = ListeningAgent(tmp_path, sim.url, sim.private_token, nofile=160,
                           webhook={"max_connections": 5000, "max_connections_per_address": 5000})  # fmt: skip
        held: list[socket.socket] = []
        try:
            until(lambda: _listening(a.webhook_port), 30, "the webhook listener", a.tail)
            for _ in range(250):  # the kernel queues what the agent cannot accept (listen backlog)
                try:
                    held.append(_connect(a.webhook_port, timeout=2))
                except OSError:
                    break
            until(lambda: a.lines("accept() failed for want of resources"), 30, "the accept failure line", a.tail)
            assert len(a.lines("exceed the open-file limit 160")) == 1  # said at start
            time.sleep(2)  # two more seconds of failing accept() retries (one a second per listener)
            assert a.lines("out of system resource") == []  # asyncio's own report, once per failed accept()
            assert 1 <= len(a.lines("accept() failed for want of resources")) <= 2  # one line per 10 s
            # (a reconcile pass that could not open a file says so, once per pass: not an accept error)
            assert [line for line in a.lines("Traceback") if "_accept_connection" in line] == []
        finally:
            for s in held:
                s.close()
        try:
            until(lambda: a.status() is not None, 30, "the socket API after the flood", a.tail)
            assert _metric(a.metrics(), "autogit_accept_errors_total") >= 1
        finally:
            a.stop()


async def test_per_address_cap_and_overall_cap():
    """One address holds at most max_connections_per_address; others still get in, up to
    max_connections; over a cap a connection gets a 503 at once and is closed."""
    metrics = AgentMetrics()
    config = WebhookConfig(enabled=True, listen="127.0.0.1:0", max_connections=6, max_connections_per_address=3)
    hook = WebhookListener(config, SecretStr(SECRET), EventBus(), _never, metrics)
    await hook.start()
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    try:
        for source in ["127.0.0.1"] * 5 + ["127.0.0.2"] * 3 + ["127.0.0.3"] * 2:
            s = await loop.run_in_executor(None, _connect, hook.port, source)
            held.append(s)
        async with asyncio.timeout(10):
            while hook.guard.open + sum(hook.guard.refused.values()) < len(held):
                await asyncio.sleep(0.01)
        # 127.0.0.1: 3 in, 2 over its cap; 127.0.0.2: 3 in (6 in all); 127.0.0.3: over the overall cap
        assert dict(hook.guard.per_address) == {"127.0.0.1": 3, "127.0.0.2": 3}
        assert hook.guard.refused == {"per-address": 2, "connections": 2}
        assert metrics.tcp_refused.labels(listener="webhook", reason="per-address")._value.get() == 2
        answered = []
        for s in held:
            s.setblocking(False)
            try:
                answered.append(s.recv(200))
            except BlockingIOError:
                answered.append(None)  # nothing sent: the connection is held
        assert [a is not None and a.startswith(b"HTTP/1.1 503") for a in answered] == [False] * 3 + [True] * 2 + [False] * 3 + [True] * 2
        # a held connection still serves a request
        s = held[0]
        s.settimeout(5)
        s.sendall(b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert (await loop.run_in_executor(None, s.recv, 100)).startswith(b"HTTP/1.1 401")
    finally:
        for s in held:
            s.close()
        await hook.stop()


async def _never(project_id: int, job_id: int, status: str) -> None:
    raise AssertionError("no lookup expected")


async def test_idle_and_trickling_connections_are_closed_after_the_idle_timeout():
    """A connection that sends nothing, or trickles its headers, is closed after
    webhook.idle_timeout, and its slot is free again."""
    config = WebhookConfig(enabled=True, listen="127.0.0.1:0", idle_timeout=0.5)
    hook = WebhookListener(config, SecretStr(SECRET), EventBus(), _never)
    await hook.start()
    loop = asyncio.get_running_loop()
    try:
        idle = await loop.run_in_executor(None, _connect, hook.port)
        trickle = await loop.run_in_executor(None, _connect, hook.port)
        trickle.setblocking(False)
        idle.setblocking(False)
        closed: set[str] = set()
        header = b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 200
        async with asyncio.timeout(20):  # bounded: 0.5 s is the limit, 20 s the test's patience
            for i in range(10_000):
                for name, s in (("idle", idle), ("trickle", trickle)):
                    if name in closed:
                        continue
                    try:
                        if name == "trickle" and i < len(header):
                            s.send(header[i : i + 1])
                        if s.recv(100) == b"":
                            closed.add(name)
                    except BlockingIOError:
                        pass
                    except ConnectionError:
                        closed.add(name)
                if closed == {"idle", "trickle"}:
                    break
                await asyncio.sleep(0.05)
        assert closed == {"idle", "trickle"}
        async with asyncio.timeout(5):
            while hook.guard.open:
                await asyncio.sleep(0.01)
        idle.close()
        trickle.close()
    finally:
        await hook.stop()


async def test_metrics_listener_caps_connections_and_never_answers_500_to_bad_input(caplog):
    metrics = AgentMetrics()
    port = free_port()
    runner = await start_metrics_listener(metrics, f"127.0.0.1:{port}", ConnectionLimits(max_connections=4, max_per_address=2, idle_timeout=5))
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            held.append(await loop.run_in_executor(None, _connect, port))
        held[2].settimeout(5)
        assert (await loop.run_in_executor(None, held[2].recv, 100)).startswith(b"HTTP/1.1 503")  # the third from one address
        for s in held:
            s.close()
        bad = [
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\n\r\n",
            b"GET /metr\xffics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\xff\xfe\xfd\r\n\r\n",
            b"GET /metrics?x=Infinity&y=NaN HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[[[[[",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n",
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        for request in bad:
            s = await loop.run_in_executor(None, _connect, port)
            s.sendall(request)
            s.settimeout(5)
            answer = await loop.run_in_executor(None, s.recv, 100)
            s.close()
            status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None
            assert status is None or status < 500, (request[:60], answer)
        assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]

        class Broken:  # a collector with a bug: the scrape fails in one line, the listener serves on
            def describe(self):
                return []

            def collect(self):
                raise RuntimeError("broken\ncollector")

        metrics.registry.register(Broken())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 500 and (await resp.text()).count("\n") == 1
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and not errors[0].exc_info and "\n" not in errors[0].getMessage()
    finally:
        await runner.cleanup()


def test_the_health_probe_answers_while_the_metrics_port_is_full(agent):
    """A kubelet probing /metrics fails once anyone fills that port's 32 slots, and the pod is
    restarted; /healthz on its own port (api.health_listen) still answers 200, from the rule
    systemd's watchdog applies (reconcile passes complete)."""
    held = [_connect(agent.metrics_port, f"127.0.1.{1 + i // 8}") for i in range(32)]  # 8 per address: the cap in all
    try:
        extra = _connect(agent.metrics_port, "127.0.1.99")
        assert extra.recv(64).startswith(b"HTTP/1.1 503"), "the metrics port is full"
        extra.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.health_port}/healthz", timeout=10) as resp:
            assert (resp.status, resp.read()) == (200, b"ok\n")
    finally:
        for s in held:
            s.close()


async def test_the_health_listener_says_why_in_one_line_and_has_its_own_cap():
    port = free_port()
    problem: list[str | None] = [None]
    runner = await start_health_listener(f"127.0.0.1:{port}", lambda: problem[0], ConnectionLimits(max_connections=2, max_per_address=2, idle_timeout=5))
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok\n")
            problem[0] = "no reconcile pass completed for 95 s\n(the limit is 60 s)"
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 503 and await resp.text() == "no reconcile pass completed for 95 s (the limit is 60 s)\n"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 404, "the probe port serves /healthz only"
        held = [await loop.run_in_executor(None, _connect, port) for _ in range(3)]
        held[2].settimeout(5)
        assert (await loop.run_in_executor(None, held[2].recv, 64)).startswith(b"HTTP/1.1 503")
        for s in held:
            s.close()
    finally:
        await runner.cleanup()


# --- item 4: refused calls are cheap; accepted hooks are merged, scoped, budgeted ---------------


async def test_a_thousand_wrong_token_calls_are_counted_not_logged(agent):
    """1,000 calls with a wrong token: every one counted in autogit_webhook_refusals_total, one
    event (and journal line) per client address per 10 s, and the event history keeps the rest."""
    url = f"http://127.0.0.1:{agent.webhook_port}/hooks/gitlab"
    headers = {"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": "wrong"}
    began = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def call() -> int:
            async with session.post(url, data=b"{}", headers=headers) as resp:
                return resp.status

        statuses = await asyncio.gather(*(call() for _ in range(1000)))
    assert set(statuses) == {401}
    metrics = await asyncio.to_thread(agent.metrics)
    assert _metric(metrics, "autogit_webhook_refusals_total", reason="token") == 1000
    assert 1 <= len(agent.lines("webhook.refused")) <= 1 + (time.monotonic() - began) // 10  # one per 10 s
    first = None
    async with AgentClient(agent.socket) as client:
        async for event in client.events(since=0):
            first = event
            break
    assert first is not None and first.seq == 1 and first.type == "agent.starting"  # nothing was pushed out of the history


async def _post_hooks(port: int, hooks: list[dict], token: str = SECRET) -> list[tuple[int, str]]:
    # 16 connections at once: under webhook.max_connections_per_address (32)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def post(hook: dict) -> tuple[int, str]:
            async with session.post(f"http://127.0.0.1:{port}/hooks/gitlab", json=hook,
                                    headers={"X-Gitlab-Event": "Job Hook", "X-Gitlab-Token": token}) as resp:  # fmt: skip
                return resp.status, (await resp.json())["message"]

        return list(await asyncio.gather(*(post(h) for h in hooks)))


async def test_repeated_hooks_for_one_job_make_one_lookup(agent, gitlab_sim):
    job = gitlab_sim.add_job(project_id=1, tags=UNSERVABLE)
    hook = {"object_kind": "build", "project_id": 1, "build_id": job.id, "build_status": "pending"}
    answers = await _post_hooks(agent.webhook_port, [hook] * 50)
    assert {status for status, _ in answers} == {202}
    await asyncio.to_thread(until, lambda: _metric(agent.metrics(), "autogit_webhook_hooks_total", outcome="merged") == 49
                            and _job_lookups(gitlab_sim) >= 1, 30, "49 hooks merged, one looked up", agent.tail)  # fmt: skip
    assert _job_lookups(gitlab_sim) == 1
    metrics = await asyncio.to_thread(agent.metrics)
    assert _metric(metrics, "autogit_webhook_hooks_total", outcome="looked-up") == 1
    # a new status is news: one more lookup
    await _post_hooks(agent.webhook_port, [hook | {"build_status": "running"}] * 5)
    await asyncio.to_thread(until, lambda: _job_lookups(gitlab_sim) == 2, 30, "the lookup of the new status", agent.tail)


async def test_a_hook_for_a_project_outside_the_scope_costs_no_gitlab_call(agent, gitlab_sim):
    job = gitlab_sim.add_job(project_id=2, tags=UNSERVABLE)  # the agent's scope: project 1 only
    answers = await _post_hooks(agent.webhook_port, [{"project_id": 2, "build_id": job.id, "build_status": "pending"}] * 3)
    assert answers == [(202, "accepted, not looked up: out-of-scope")] * 3
    metrics = await asyncio.to_thread(agent.metrics)
    assert _metric(metrics, "autogit_webhook_hooks_total", outcome="out-of-scope") == 3
    assert _job_lookups(gitlab_sim) == 0
    assert len(agent.lines("webhook.dropped")) == 1  # one line, the rest counted
    assert "project 2 is outside gitlab.scope" in agent.lines("webhook.dropped")[0]


async def test_hook_lookups_stop_while_gitlabs_rate_limit_budget_is_low():
    """The lookups go through the adapter and read the budget it last saw (RateLimit-*): with
    under a quarter left, an accepted hook is counted, not looked up."""
    async with GitLabSimulator(jobs_index_limit=8) as sim:
        adapter = GitLabAdapter(GitLabConfig(url=sim.url, scope=GitLabScope(kind="projects", projects=[1]), max_retries=0),
                                SecretStr(sim.private_token))  # fmt: skip
        job = sim.add_job(project_id=1, tags=UNSERVABLE)
        hints: list[tuple[str, int]] = []

        async def lookup(project_id: int, job_id: int, status: str) -> None:
            status, found = await adapter.get_job(project_id, job_id)
            hints.append((status, found.id))

        metrics = AgentMetrics()
        hook = WebhookListener(WebhookConfig(enabled=True, listen="127.0.0.1:0"), SecretStr(SECRET), EventBus(), lookup, metrics,
                               in_scope=adapter.in_scope, budget_low=lambda: budget_low(adapter.rate_limit))  # fmt: skip
        await hook.start()
        try:
            for _ in range(7):  # the polls spend the budget: 1 of 8 left
                await adapter.observe_queue()
            assert adapter.rate_limit["remaining"] == 1
            assert await _post_hooks(hook.port, [{"project_id": 1, "build_id": job.id, "build_status": "pending"}]) == [(202, "accepted")]
            async with asyncio.timeout(10):
                while metrics.webhook_hooks.labels(outcome="budget")._value.get() < 1:
                    await asyncio.sleep(0.01)
            assert _job_lookups(sim) == 0 and hints == []
        finally:
            await hook.stop()


# --- item 5: bad input is a 400 with one line ---------------------------------------------------


def _raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    with _connect(port) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < 12:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1]), data


def test_bad_input_is_a_400_with_one_line(agent):
    port = agent.webhook_port

    def hook(body: bytes, token: bytes = SECRET.encode()) -> bytes:
        return (b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Job Hook\r\nX-Gitlab-Token: " + token +
                b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip

    good = b'{"project_id": 1, "build_id": 5, "build_status": "pending"}'
    cases = {
        "token not UTF-8": hook(good, b"\xff\xfe" + SECRET.encode()[2:]),
        "Infinity": hook(b'{"project_id": 1, "build_id": Infinity, "build_status": "pending"}'),
        "NaN in an ignored field": hook(b'{"project_id": 1, "build_id": 5, "build_status": "pending", "x": NaN}'),
        "deeply nested": hook(b'{"project_id": 1, "build_id": 5, "build_status": "pending", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nested past the bound": hook(b'{"project_id": 1, "build_id": 5, "build_status": "pending", "x": ' + b"[" * 40 + b"]" * 40 + b"}"),
        "ids not integers": hook(b'{"project_id": "1", "build_id": 5.0, "build_status": "pending"}'),
        "huge id": hook(b'{"project_id": 1, "build_id": 99999999999999999999999, "build_status": "pending"}'),
        "not an object": hook(b"[1, 2]"),
    }
    for name, request in cases.items():
        status, answer = _raw_request(port, request)
        assert status == 400, (name, answer[:300])
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert b"\n" not in body.strip(), name  # one line
    assert agent.lines("Traceback") == [] and agent.lines("Error handling request") == []
    assert agent.lines("webhook handler failed") == []
    assert len(agent.lines("webhook.refused")) == 1  # one address, one line per 10 s
    metrics = agent.metrics()
    assert _metric(metrics, "autogit_webhook_refusals_total", reason="bad-request") == len(cases)


# --- item 6: no webhook port in detect-only mode -------------------------------------------------


def test_detect_only_opens_no_webhook_port(tmp_path):
    a = ListeningAgent(tmp_path, None, None)
    try:
        assert a.status()["phase"] == "detect-only"
        with pytest.raises(ConnectionRefusedError):
            _connect(a.webhook_port).close()
        assert len(a.lines("webhook.enabled in detect-only mode")) == 1
        assert a.metrics()  # /metrics still serves
    finally:
        a.stop()


def test_the_accept_error_log_passes_other_reports_on():
    """Only accept() resource errors are collapsed; anything else reaches the previous handler."""
    loop = asyncio.new_event_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    install_accept_error_log(loop)
    try:
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
        loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")})
    finally:
        loop.close()
    assert seen == ["something else"]
