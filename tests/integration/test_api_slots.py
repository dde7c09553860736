"""The socket's connection slots against local users who hold connections open (issue 24, item 2):
a reader holding idle connections or event streams, readers filling every general slot, and a
peer without access. Each runs as its own uid in a child process (peer_process.py); the operator
is this process (root). Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time

import pytest
from api_harness import ServerThread, api_config, http, make_state, socket_dir
from ci_policy import needs
from peer_process import As, Connections, request_as, request_line
from waiting import until

pytestmark = needs(os.geteuid() == 0, "needs root: the clients run as other uids")

NOBODY_GID = 65534
REFUSAL_TIMEOUT = 0.5  # seconds a politely refused connection has to send its request


@pytest.fixture(scope="module")
def read_group():
    import grp

    name = f"agq{secrets.token_hex(3)}"
    subprocess.run(["groupadd", name], check=True, capture_output=True, timeout=60)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def start(group: str, refusal_timeout: float = REFUSAL_TIMEOUT, **limits: int) -> ServerThread:
    config = api_config(socket_dir(), group=group, admin_group="root", **limits)
    return ServerThread(make_state(), config, refusal_timeout=refusal_timeout).start()


@pytest.fixture
def server(read_group):
    srv = start(read_group[0], max_connections=16, max_connections_per_uid=8, admin_reserved_connections=4)
    yield srv
    srv.stop()


def reader(read_group, uid: int) -> As:
    # A uid with no passwd entry, in the read group only by its process's supplementary groups.
    return As(uid=uid, gid=NOBODY_GID, groups=(read_group[1],))


def slots(srv: ServerThread) -> tuple[int, int]:
    """(connections holding a slot, refused ones awaiting their answer)."""
    assert srv.server is not None
    return srv.in_loop(lambda: (srv.server.slots.held, srv.server.slots.refusing))


def refusals(srv: ServerThread, reason: str) -> float:
    for line in srv.metrics.render().decode().splitlines():
        if line.startswith(f'autogit_api_refusals_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_reader_holding_idle_connections_cannot_lock_out_root(server, read_group):
    # The review's attack: one reader opens far more idle connections than the socket has slots.
    with Connections(server.path, 40, reader(read_group, 61001)) as hog:
        until(lambda: slots(server)[0] == 8, 10, "the reader's quota of 8 slots", poll=0.05)
        status, _, body = http(server.path, "GET", "/v1/status")
        assert status == 200, body
        # The 32 beyond its quota: at most 4 wait for an answer, the rest are closed at once, and
        # the 4 are closed when their answer deadline passes (they never sent a request).
        until(lambda: hog.check()["closed"] == 32, REFUSAL_TIMEOUT + 5, "the refused connections to be closed", poll=0.05)
        until(lambda: slots(server) == (8, 0), 10, "only the reader's quota held (root's request is over)", poll=0.05)
        assert refusals(server, "uid-connections") == 32
        # Its next connection is told why, in one line.
        status, body = request_as(server.path, reader(read_group, 61001))
        assert status == 503
        err = json.loads(body)["error"]
        assert err["type"] == "unavailable" and "uid 61001 has 8 connections open (api.max_connections_per_uid)" in err["message"]
    until(lambda: slots(server) == (0, 0), 10, "the slots to be given back", poll=0.05)


def test_readers_filling_every_general_slot_leave_the_admin_reserve(server, read_group):
    with Connections(server.path, 8, reader(read_group, 61002)), Connections(server.path, 8, reader(read_group, 61003)):
        until(lambda: slots(server)[0] == 16, 10, "16 readers' connections (max_connections)", poll=0.05)
        status, body = request_as(server.path, reader(read_group, 61004))
        assert status == 503 and "too many connections (limit 16)" in json.loads(body)["error"]["message"]
        assert http(server.path, "GET", "/v1/status")[0] == 200  # root uses the reserve
        until(lambda: slots(server)[0] == 16, 10, "root's connection to be given back", poll=0.05)
        held = []
        try:
            for _ in range(4):  # the whole reserve (4)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(server.path)
                held.append(sock)
            until(lambda: slots(server)[0] == 20, 10, "root's 4 reserved connections", poll=0.05)
            assert http(server.path, "GET", "/v1/status")[0] == 503  # the reserve is bounded too
            held.pop().close()
            until(lambda: slots(server)[0] == 19, 10, "a reserved slot to be given back", poll=0.05)
            assert http(server.path, "GET", "/v1/status")[0] == 200
        finally:
            for sock in held:
                sock.close()


def test_event_streams_count_against_the_quota(server, read_group):
    with Connections(server.path, 8, reader(read_group, 61005), request_line("GET", "/v1/events")) as streams:
        assert streams.statuses == [200] * 8
        status, body = request_as(server.path, reader(read_group, 61005), "GET", "/v1/events")
        assert status == 503 and "api.max_connections_per_uid" in body
        assert http(server.path, "GET", "/v1/status")[0] == 200
        assert streams.check()["closed"] == 0  # its streams go on


def test_connections_without_access_hold_no_slot(read_group):
    # A long answer deadline here, so what is closed at once is told apart from what waits for it
    # (the deadline itself: the first test).
    srv = start(read_group[0], refusal_timeout=60, max_connections=2, max_connections_per_uid=2, admin_reserved_connections=0)
    try:
        os.chmod(srv.path, 0o666)  # past the file mode, as if it were mis-set: the agent's own gate
        with Connections(srv.path, 50, As(uid=61006, gid=NOBODY_GID)) as stranger:
            until(lambda: stranger.check()["closed"] >= 46, 10, "connections without access to be closed at once", poll=0.05)
            time.sleep(0.2)
            assert stranger.check()["closed"] == 46  # the other 4 wait for an answer, holding no slot
            assert slots(srv) == (0, 4)
            assert request_as(srv.path, reader(read_group, 61007)) == 200
            assert request_as(srv.path, reader(read_group, 61008)) == 200
        assert refusals(srv, "forbidden") == 50
        refused = [e for e in srv.state.bus.history() if e.type == "api.refused"]
        assert [e.data["uid"] for e in refused] == [61006]  # one event, not 50 (rate-limited per uid)
    finally:
        srv.stop()
