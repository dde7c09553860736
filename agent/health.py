"""GET /healthz on a port of its own (`api.health_listen`), for a kubelet's liveness and
readiness probes.

Why not /metrics: scrapes render every series (costly every few seconds), and the metrics port's
connection cap is shared with whoever reaches it, so a flood of that port would fail the probes
and get the pod restarted. Why not "the port answers": an event loop can answer while the
reconciler is wedged. So the answer is the rule systemd's watchdog already applies on a host
(daemon.py `_watchdog`): 200 while reconcile passes complete, else 503 and why, in one line.
The port serves nothing else and is behind its own small ConnectionGuard; on Kubernetes it is in
no Service, and the chart's NetworkPolicy admits no pod to it (the kubelet probes from the node).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .listen import parse_listen
from .tcp_guard import ConnectionGuard, ConnectionLimits, GuardedRunner

__all__ = ["HEALTH_LIMITS", "start_health_listener"]

# A kubelet probes with one connection at a time; a few more for an operator's curl.
HEALTH_LIMITS = ConnectionLimits(max_connections=8, max_per_address=4, idle_timeout=5.0, max_lifetime=30.0)


async def start_health_listener(listen: str, problem: Callable[[], str | None], limits: ConnectionLimits = HEALTH_LIMITS,
                                on_refused: Callable[[str], None] | None = None) -> web.AppRunner:  # fmt: skip
    """Serve GET /healthz on `listen`: 200 `ok` while `problem()` is None, else 503 and its line.
    Returns the runner; `await runner.cleanup()` stops it."""

    async def healthz(_request: web.Request) -> web.Response:
        why = problem()
        if why is None:
            return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
        return web.Response(status=503, text=" ".join(why.split())[:300] + "\n", headers={"Cache-Control": "no-store"})

    app = web.Application(client_max_size=1024)
    app.router.add_get("/healthz", healthz)
    runner = GuardedRunner(app, ConnectionGuard("health", limits, on_refused), access_log=None, max_line_size=2048,
                           max_field_size=2048, max_headers=32, handle_signals=False, shutdown_timeout=1.0)  # fmt: skip
    await runner.setup()
    host, port = parse_listen(listen, "api.health_listen")
    await web.TCPSite(runner, host, port).start()
    return runner
