"""No secret in a URL, on the wire: what the GitLab adapter sends, read as bytes by a recording
TCP relay between it and the GitLab double (URLs end up in proxy and access logs, and in the
messages of redirect errors). The runner token goes in the JSON body of `DELETE /runners`, as
gitlab-runner sends it (network/gitlab.go UnregisterRunner: doJSON); the user token in the
PRIVATE-TOKEN header. A redirect is never followed: it would carry the token (header and body)
to wherever it points, and its URL into an error line and so into an event."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from pydantic import SecretStr

from autogit.agent.config import GitLabConfig
from autogit.agent.gitlab.adapter import GitLabAdapter, GitLabError
from autogit.gitlab_double.gitlab_sim import GitLabSimulator

# Not anchored at a line start: on a kept-alive connection a request follows the previous body.
REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


class RecordingRelay:
    """A TCP relay to `upstream` that keeps every byte the client sent."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = bytearray()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if keep:
                        self.sent += chunk
                    dst.write(chunk)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, up_w, True), pump(up_r, client_w, False))

    def targets(self) -> list[bytes]:
        """Every request target (path and query) the client sent."""
        return [m.group(2) for m in REQUEST_LINE.finditer(bytes(self.sent))]


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[GitLabSimulator, RecordingRelay]]:
    sim = GitLabSimulator(host="127.0.0.1")
    await sim.start()
    relay = RecordingRelay(int(sim.url.rsplit(":", 1)[1].split("/")[0]))
    await relay.start()
    yield sim, relay
    await relay.stop()
    await sim.stop()


def adapter_for(url: str, token: str) -> GitLabAdapter:
    config = GitLabConfig.model_validate({"url": url, "request_timeout": 3, "max_retries": 0, "scope": {"kind": "projects", "projects": [1]}})
    return GitLabAdapter(config, SecretStr(token))


async def test_no_token_is_ever_in_a_url(relayed):
    sim, relay = relayed
    gl = adapter_for(relay.url, sim.private_token)
    created = await gl.create_runner("autogit:h:r1", ["arm64"], run_untagged=False)
    runner_token = created.token.get_secret_value()
    assert await gl.runner_exists(created.id) is True
    await gl.observe_queue()
    await gl.delete_runner(created.id, created.token)  # with the runner's own token
    assert [r.id for r in sim.runners if r.id == created.id] == [], "the runner was not deleted"

    targets = relay.targets()
    assert len(targets) == 4, targets  # POST /user/runners, GET /runners/:id, GET jobs, DELETE /runners
    for target in targets:
        assert runner_token.encode() not in target and sim.private_token.encode() not in target, f"a token in the URL {target!r}"
        assert b"token=" not in target.lower(), target
    # The relay does see the runner token: in the body of the one DELETE /runners.
    wire = bytes(relay.sent)
    delete = wire.index(b"DELETE /api/v4/runners HTTP/1.1\r\n")
    assert runner_token.encode() in wire[delete:], "the runner token was not sent at all"


async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, int]:
    """`handler` for every method and path, on a loopback port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[str, list[str]]]:
    """`old` answers every request with a redirect (307, which keeps method, body and headers)
    to `elsewhere`, which records whatever reaches it."""
    reached: list[str] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        reached.append(f"{request.method} {request.path_qs} {dict(request.headers)} {body!r}")
        return web.json_response({}, status=204 if request.method == "DELETE" else 200)

    other_runner, other_port = await serve(record)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{other_port}{request.path_qs}")

    old_runner, old_port = await serve(redirect)
    yield f"http://127.0.0.1:{old_port}", reached
    await old_runner.cleanup()
    await other_runner.cleanup()


async def test_a_redirect_is_not_followed_and_its_error_carries_no_token(redirecting):
    url, reached = redirecting
    user_token, runner_token = "glpat-USER-TOKEN-0123456789", "glrt-RUNNER-TOKEN-0123456789"
    gl = adapter_for(url, user_token)
    with pytest.raises(GitLabError) as deleting:
        await gl.delete_runner(7, SecretStr(runner_token))
    with pytest.raises(GitLabError) as reading:
        await gl.get_job(1, 1)
    assert reached == [], f"a redirect was followed, with the token: {reached}"
    for exc in (deleting.value, reading.value):
        line = str(exc)
        assert runner_token not in line and user_token not in line, line
        assert "redirected" in line and "gitlab.url" in line and "\n" not in line, line
