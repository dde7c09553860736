"""The one seam into aiohttp that the listeners need: a per-connection handler class of our own.

The socket API and the TCP listeners judge a connection when it opens, before a byte of it is
read (who the peer is, whether a slot is free), which only aiohttp's per-connection protocol
(RequestHandler) can do. aiohttp builds its low-level Server inside AppRunner and offers no hook
for that class, so `HandlerRunner` swaps the built Server's class for a subclass whose only
difference is the handler it makes (no new slots), and hangs the caller's `context` (the
socket's gate, a listener's ConnectionGuard) on it for the handlers to reach as
`self._manager.context`. This is the one place the agent reaches past aiohttp's public surface;
the integration tests of the socket's slots and the listeners' caps guard it on upgrades.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["HandlerRunner", "context_of"]


class _Server(web.Server):
    handler_class: type[RequestHandler]
    context: Any = None

    def __call__(self) -> RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class HandlerRunner(web.AppRunner):
    """An AppRunner whose connections are served by `handler_class`, with `context` on their server."""

    def __init__(self, app: web.Application, handler_class: type[RequestHandler], context: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_class = handler_class
        self.context = context

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.handler_class = self._handler_class
        server.context = self.context
        return server


def context_of(handler: RequestHandler) -> Any:
    """The `context` of the HandlerRunner serving `handler`; None once the server is gone."""
    server = handler._manager
    return server.context if isinstance(server, _Server) else None
