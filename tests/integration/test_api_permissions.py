"""Who may use the socket, with real users and groups (created here, removed afterwards) and
curl run as each of them: a stranger, a reader (socket group) and an admin (admin group).
Needs root (CI runs as root)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import subprocess

import pytest
from ci_policy import needs
from api_harness import GPU_BIG, ServerThread, api_config, make_state, socket_dir
from peer_process import As, request_as

NOBODY_GID = 65534

pytestmark = needs(
    os.geteuid() == 0 and all(shutil.which(t) for t in ("useradd", "groupadd", "runuser", "curl")),
    "needs root, useradd/groupadd, runuser and curl",
)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def people():
    tag = secrets.token_hex(3)
    names = {"read_group": f"agr{tag}", "admin_group": f"aga{tag}", "stranger": f"ags{tag}", "reader": f"agd{tag}", "admin": f"agm{tag}"}
    created_users, created_groups = [], []
    try:
        for group in (names["read_group"], names["admin_group"]):
            _run("groupadd", group)
            created_groups.append(group)
        _run("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", names["stranger"])
        created_users.append(names["stranger"])
        _run("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", names["read_group"], names["reader"])
        created_users.append(names["reader"])
        # Admins are in both: the socket file's group is the read group (see docs/security/).
        _run("useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", f"{names['read_group']},{names['admin_group']}", names["admin"])
        created_users.append(names["admin"])
        yield names
    finally:
        for user in created_users:
            subprocess.run(["userdel", user], capture_output=True, timeout=60)
        for group in created_groups:
            subprocess.run(["groupdel", group], capture_output=True, timeout=60)


@pytest.fixture
def server(people):
    srv = ServerThread(make_state(), api_config(socket_dir(), group=people["read_group"], admin_group=people["admin_group"])).start()
    yield srv
    srv.stop()


def curl(user: str, path: str, method: str = "GET", url: str = "/v1/status") -> tuple[int, int, bytes]:
    """(curl exit code, HTTP status, body) for a request made as `user`."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "curl", "-sS", "--max-time", "10", "--unix-socket", path, "-X", method,
         "-w", "\n%{http_code}", f"http://autogit{url}"],
        capture_output=True, timeout=30,
    )
    body, _, code = result.stdout.rpartition(b"\n")
    return result.returncode, int(code or 0), body


def grp_gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def test_socket_file_belongs_to_the_read_group(server, people):
    st = os.stat(server.path)
    assert grp.getgrgid(st.st_gid).gr_name == people["read_group"] and st.st_mode & 0o777 == 0o660


def test_stranger_cannot_even_connect(server, people):
    rc, _, _ = curl(people["stranger"], server.path)
    assert rc == 7  # curl: couldn't connect (EACCES on the socket file)


def test_stranger_past_the_file_mode_is_refused_by_peer_credentials(server, people):
    # Defence in depth: if the file mode were wrong, SO_PEERCRED still stops the stranger.
    os.chmod(server.path, 0o666)
    before = server.state.intents
    rc, status, body = curl(people["stranger"], server.path)
    assert (rc, status) == (0, 403) and json.loads(body)["error"]["type"] == "forbidden"
    rc, status, _ = curl(people["stranger"], server.path, "POST", "/v1/scaling/pause")
    assert status == 403 and server.state.intents == before
    rc, status, _ = curl(people["stranger"], server.path, "GET", "/v1/events")
    assert status == 403
    refused = [e for e in server.state.bus.history() if e.type == "api.refused"]
    uid = pwd.getpwnam(people["stranger"]).pw_uid
    assert len(refused) == 1 and refused[0].data["uid"] == uid and refused[0].data["path"] == "/v1/status"  # rate-limited per uid
    assert b'autogit_api_refusals_total{reason="forbidden"} 3.0' in server.metrics.render()


def test_reader_reads_but_may_not_act(server, people):
    rc, status, body = curl(people["reader"], server.path)
    assert (rc, status) == (0, 200) and json.loads(body)["hostname"] == "ci-host-1"
    assert curl(people["reader"], server.path, "GET", "/metrics")[1] == 200
    rc, status, body = curl(people["reader"], server.path, "POST", f"/v1/gpus/{GPU_BIG}/drain")
    assert status == 403 and people["admin_group"] in json.loads(body)["error"]["message"]
    assert GPU_BIG not in server.state.intents.drained_gpus


def test_admin_acts_and_is_named_in_the_event(server, people):
    rc, status, body = curl(people["admin"], server.path, "POST", f"/v1/gpus/{GPU_BIG}/drain")
    assert status == 200 and json.loads(body)["changed"] is True
    assert GPU_BIG in server.state.intents.drained_gpus
    event = server.state.bus.history()[-1]
    assert event.type == "gpu.drained" and people["admin"] in event.data["actor"]


# --- group membership is the connecting process's (SO_PEERGROUPS), not /etc/group's -----------


def test_a_group_in_the_process_counts_without_an_etc_group_entry(server, people):
    read_gid, admin_gid = grp_gid(people["read_group"]), grp_gid(people["admin_group"])
    # uid 61010 has no passwd entry and is in no group of /etc/group: only its process's groups say.
    reader = As(uid=61010, gid=NOBODY_GID, groups=(read_gid,))
    assert request_as(server.path, reader) == 200
    status, body = request_as(server.path, reader, "POST", f"/v1/gpus/{GPU_BIG}/drain")
    assert status == 403 and people["admin_group"] in json.loads(body)["error"]["message"]
    admin = As(uid=61011, gid=NOBODY_GID, groups=(read_gid, admin_gid))
    assert request_as(server.path, admin, "POST", f"/v1/gpus/{GPU_BIG}/drain") == 200
    assert server.state.bus.history()[-1].data["actor"] == "uid 61011"


def test_a_group_the_process_dropped_does_not_count(server, people):
    # The reader is in the read group in /etc/group, but this process of theirs dropped it
    # (setgroups): the kernel's gate and the agent's must agree that it is not a member.
    user = pwd.getpwnam(people["reader"])
    dropped = As(uid=user.pw_uid, gid=user.pw_gid, groups=())
    assert request_as(server.path, dropped) == "PermissionError"  # the file mode keeps it out
    os.chmod(server.path, 0o666)
    status, body = request_as(server.path, dropped)
    assert status == 403 and json.loads(body)["error"]["type"] == "forbidden"
    assert request_as(server.path, As(user.pw_uid, user.pw_gid, (grp_gid(people["read_group"]),))) == 200


def test_more_groups_than_the_first_buffer_holds(server, people):
    # 300 groups: past the agent's first guess (64) and past CPython's getsockopt buffer (256
    # gids); the read group sorts last, so a truncated list would miss it.
    read_gid = grp_gid(people["read_group"])
    many = tuple(gid for gid in range(100, 400) if gid not in (read_gid, grp_gid(people["admin_group"]))) + (read_gid,)
    assert read_gid > 400
    assert request_as(server.path, As(uid=61012, gid=NOBODY_GID, groups=many)) == 200
