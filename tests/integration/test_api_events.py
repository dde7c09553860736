"""The NDJSON event stream over the real socket: live delivery, ?since= replay, heartbeats, and
consumers that fall behind or stop reading, which must never slow the agent down."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from api_harness import ServerThread, api_config, make_state, socket_dir

from autogit.agent.api.client import AgentClient, AgentUnavailable
from autogit.agent.events import Event


def start(queue_size: int = 1000, **kw) -> ServerThread:
    return ServerThread(make_state(queue_size=queue_size), api_config(socket_dir()), **kw).start()


@pytest.fixture
def server():
    srv = start(write_timeout=1.0, heartbeat=0.2)
    yield srv
    srv.stop()


def publish(srv: ServerThread, n: int, prefix: str = "test", payload: str = "") -> list[Event]:
    def burst() -> list[Event]:
        return [srv.state.bus.publish(f"{prefix}.event", f"event {i}", i=i, payload=payload) for i in range(n)]

    return srv.in_loop(burst)


async def wait_for_subscribers(srv: ServerThread, count: int) -> None:
    for _ in range(200):
        if srv.state.bus.subscriber_count == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{srv.state.bus.subscriber_count} subscribers, wanted {count}")


async def test_live_events_arrive_in_order(server):
    async with AgentClient(server.path) as client:
        stream = client.events()
        first = asyncio.ensure_future(anext(stream))
        await wait_for_subscribers(server, 1)
        sent = await asyncio.to_thread(publish, server, 20)
        got = [await first] + [await anext(stream) for _ in range(19)]
        assert [e.seq for e in got] == [e.seq for e in sent]
        assert got[3].data == {"i": 3, "payload": ""}
        await stream.aclose()
    await wait_for_subscribers(server, 0)


async def test_since_replays_history_then_continues_live(server):
    # make_state() already published the health/phase events (seq 1..2).
    sent = publish(server, 5)
    async with AgentClient(server.path) as client:
        stream = client.events(since=sent[1].seq)
        replayed = [await anext(stream) for _ in range(3)]
        assert [e.seq for e in replayed] == [e.seq for e in sent[2:]]
        live = await asyncio.to_thread(publish, server, 1, "live")
        assert (await anext(stream)).seq == live[0].seq
        await stream.aclose()
        everything = client.events(since=0)
        assert (await anext(everything)).seq == 1  # the whole kept history
        await everything.aclose()


async def test_heartbeat_lines_keep_a_quiet_stream_alive(server):
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"200 OK" in head and b"application/x-ndjson" in head
    body = await asyncio.wait_for(reader.read(200), 2)  # chunked: size line, then "\n"
    assert b"\r\n\n\r\n" in body
    writer.close()


def test_slow_consumer_is_dropped_with_a_notice_and_the_agent_does_not_wait():
    srv = start(queue_size=8, write_timeout=5.0)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(srv.path)
            sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(200):
                if srv.state.bus.subscriber_count == 1:
                    break
                time.sleep(0.01)
            publish(srv, 5000, payload="x" * 200)  # the consumer cannot keep up with this burst
            assert srv.state.bus.subscriber_count == 0  # dropped by the bus
            # The agent does not wait for it: while that socket is still unread, another client
            # is answered at once.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
                other.settimeout(2)
                other.connect(srv.path)
                other.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert other.recv(65536).startswith(b"HTTP/1.1 200")
            sock.settimeout(5)
            data = b""
            while not data.endswith(b"0\r\n\r\n"):  # read to the end of the chunked stream
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = [json.loads(line) for line in data.split(b"\r\n\r\n", 1)[1].split(b"\n") if line.startswith(b"{")]
        assert lines[-1]["type"] == "stream.dropped"
        assert len(lines) <= 8 + 1  # at most a queue's worth, then the notice
        delivered = [line["seq"] for line in lines[:-1]]
        assert delivered == list(range(delivered[0], delivered[-1] + 1))
        # The notice says where to resume: right after the last event this consumer was given.
        assert lines[-1]["data"]["since"] == delivered[-1]
        assert b"autogit_api_refusals_total{reason=\"slow-consumer\"} 1.0" in srv.metrics.render()
    finally:
        srv.stop()


def test_consumer_that_stops_reading_is_cut_off():
    # A big queue, so the bus keeps it; the socket fills instead. The write deadline (0.5 s)
    # must end the handler and free the subscription.
    srv = start(queue_size=100_000, write_timeout=0.5)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(srv.path)
            sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(200):
                if srv.state.bus.subscriber_count == 1:
                    break
                time.sleep(0.01)
            for _ in range(20):
                publish(srv, 200, payload="y" * 2000)
                if srv.state.bus.subscriber_count == 0:
                    break
                time.sleep(0.2)
            assert srv.state.bus.subscriber_count == 0
    finally:
        srv.stop()


async def test_stream_ends_when_the_agent_stops():
    srv = start(heartbeat=10)
    async with AgentClient(srv.path, stream_read_timeout=5) as client:
        stream = client.events()
        first = asyncio.ensure_future(anext(stream))
        await wait_for_subscribers(srv, 1)
        await asyncio.to_thread(srv.stop)
        with pytest.raises((StopAsyncIteration, AgentUnavailable)):
            await first



def test_resuming_after_a_drop_loses_nothing():
    srv = start(queue_size=8)
    try:
        async def run() -> tuple[list[int], int]:
            async with AgentClient(srv.path) as client:
                stream = client.events()
                first = asyncio.ensure_future(anext(stream))
                await wait_for_subscribers(srv, 1)
                await asyncio.to_thread(publish, srv, 50)
                got = [await first] + [e async for e in stream]
                notice = got[-1]
                assert notice.type == "stream.dropped"
                return [e.seq for e in got[:-1]], notice.data["since"]

        delivered, since = asyncio.run(run())
        assert since == delivered[-1]  # resuming with ?since=<since> must not skip anything
    finally:
        srv.stop()
