"""What a flood of the agent's TCP ports costs its operators, beside the same agent unloaded.

A real `autogit-agent run` (open-file limit 1,024, systemd's default soft limit) with its webhook,
/metrics and /healthz on loopback, against the GitLab double. Measured in one run:

- baseline: GET /v1/status over the socket and GET /healthz, the agent idle;
- under flood: the same, while 1,100 idle connections from 40 addresses are held on the webhook
  port; then GET /v1/status while wrong-token POSTs are sent to it as fast as one client can;
- what the flood left: the agent's descriptors, the journal lines and /v1/events entries the
  refusals wrote, and the refusals counted in metrics.

    .venv/bin/python bench/listener_flood_bench.py [--requests 200] [--wrong 1000]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from test_tcp_listeners import ListeningAgent, _connect, _listening, _metric  # noqa: E402
from waiting import until  # noqa: E402

from autogit.gitlab_double import GitLabSimulator  # noqa: E402


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("agent", timeout=10)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def timed_gets(connect, path: str, n: int) -> list[float]:
    """Seconds of each of `n` GETs of `path`, one connection each (as `autogit-agent status` does)."""
    took = []
    for _ in range(n):
        began = time.perf_counter()
        conn = connect()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200, (path, resp.status)
        took.append(time.perf_counter() - began)
    return took


def ms(values: list[float], q: float) -> str:
    return f"{statistics.quantiles(values, n=100)[int(q) - 1] * 1000:7.2f}" if len(values) > 1 else "   -   "


def wrong_tokens(port: int, count: int, done: list[float]) -> None:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(count):
        try:
            conn.request("POST", "/hooks/gitlab", body=b"{}", headers={"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Job Hook"})
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()
    done.append(time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--wrong", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=1100)
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4 * args.idle), hard), hard))
    with GitLabSimulator().running_in_thread() as sim, tempfile.TemporaryDirectory() as tmp:
        agent = ListeningAgent(Path(tmp), sim.url, sim.private_token)
        try:
            until(lambda: _listening(agent.webhook_port), 30, "the webhook listener", agent.tail)
            status = lambda: UnixHTTPConnection(agent.socket)  # noqa: E731
            health = lambda: http.client.HTTPConnection("127.0.0.1", agent.health_port, timeout=10)  # noqa: E731
            timed_gets(status, "/v1/status", 10)  # warm up
            base_status, base_health = timed_gets(status, "/v1/status", args.requests), timed_gets(health, "/healthz", args.requests)
            fds_before, lines_before = agent.fds(), len(agent.log.read_text(errors="replace").splitlines())
            refusal_lines_before = len(agent.lines("webhook.refused"))

            held = [_connect(agent.webhook_port, f"127.0.0.{2 + i % 40}") for i in range(args.idle)]
            idle_status, idle_health = timed_gets(status, "/v1/status", args.requests), timed_gets(health, "/healthz", args.requests)
            fds_flood = agent.fds()
            for s in held:
                s.close()
            until(lambda: agent.fds() <= fds_before + 16, 30, "the held connections to be released", agent.tail)
            refused_conn = sum(_metric(agent.metrics(), "autogit_tcp_refused_connections_total", listener="webhook", reason=r)
                               for r in ("connections", "per-address"))  # fmt: skip

            wrong_took: list[float] = []
            sender = threading.Thread(target=wrong_tokens, args=(agent.webhook_port, args.wrong, wrong_took))
            sender.start()
            wrong_status = timed_gets(status, "/v1/status", args.requests)
            sender.join()
            metrics = agent.metrics()
            lines = len(agent.log.read_text(errors="replace").splitlines()) - lines_before
            refusal_events = len(agent.lines("webhook.refused")) - refusal_lines_before
            refused_token = sum(v for (name, _labels), v in metrics.items() if name == "autogit_webhook_refusals_total")
        finally:
            agent.stop()
    print(f"listener flood bench: {args.idle} idle webhook connections from 40 addresses + {args.wrong} wrong-token POSTs; "
          f"agent open-file limit 1024; {args.requests} requests per row")  # fmt: skip
    print(f"{'':40} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    rows = (("GET /v1/status, idle agent (baseline)", base_status), ("GET /v1/status, idle connections held", idle_status),
            ("GET /v1/status, wrong-token POSTs", wrong_status), ("GET /healthz, idle agent (baseline)", base_health),
            ("GET /healthz, idle connections held", idle_health))  # fmt: skip
    for name, values in rows:
        print(f"{name:40} {ms(values, 50)} {ms(values, 90)} {ms(values, 99)}")
    print(f"descriptors: {fds_before} before, {fds_flood} with {args.idle} connections held (limit 1024); "
          f"connections refused over the caps: {refused_conn:.0f}")  # fmt: skip
    print(f"wrong-token refusals counted: {refused_token:.0f} of {args.wrong} ({wrong_took[0] / args.wrong * 1e6:.0f} us each, one client)")
    print(f"journal lines written during the flood: {lines}, of them webhook.refused events: {refusal_events} "
          f"(the event history keeps 1000; before this change each refusal was one)")


if __name__ == "__main__":
    main()
