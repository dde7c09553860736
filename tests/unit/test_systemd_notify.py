"""sd_notify against a real AF_UNIX datagram socket (a path and an abstract name), as systemd
would receive it, and socket activation through systemd-socket-activate."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import pytest
from ci_policy import needs

from autogit.agent.systemd import Notifier, NotifyError, listen_fds


@pytest.fixture(params=["path", "abstract"])
def manager(request, tmp_path):
    """(NOTIFY_SOCKET value, receiving socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"autogit-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    sock.settimeout(2)
    yield address, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def nothing_waiting(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        sock.recv(4096)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(2)
    return False


def test_ready_status_stopping(manager):
    address, sock = manager
    n = Notifier({"NOTIFY_SOCKET": address})
    assert n.ready()
    assert received(sock) == ["READY=1", f"MAINPID={os.getpid()}"]
    assert n.status("running: 3 runners\n(2 busy)")
    assert received(sock) == ["STATUS=running: 3 runners (2 busy)"]  # one line
    assert n.status("running: 3 runners (2 busy)") is False  # unchanged: not sent again
    assert nothing_waiting(sock)
    assert n.status("degraded: docker failing")
    assert received(sock) == ["STATUS=degraded: docker failing"]
    assert n.stopping()
    assert received(sock) == ["STOPPING=1"]
    n.close()


def test_reloading_carries_monotonic_usec(manager):
    address, sock = manager
    n = Notifier({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    lines = received(sock)
    assert lines[0] == "RELOADING=1"
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_watchdog_only_when_asked_and_at_half_the_interval(manager):
    address, sock = manager
    quiet = Notifier({"NOTIFY_SOCKET": address})
    assert quiet.watchdog_interval is None and quiet.watchdog() is False
    assert nothing_waiting(sock)
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval == 15.0
    assert n.watchdog() and received(sock) == ["WATCHDOG=1"]
    other = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None  # meant for another process


def test_no_notify_socket_is_a_no_op():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False and n.status("x") is False and n.watchdog() is False and n.stopping() is False


def test_unusable_notify_socket_is_loud():
    with pytest.raises(NotifyError):
        Notifier({"NOTIFY_SOCKET": "relative/path"})
    with pytest.raises(NotifyError):
        Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})


def test_send_failure_is_reported_and_logged_once(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="autogit.agent.systemd"):
        assert n.ready() is False
        assert n.status("x") is False
    assert len([r for r in caplog.records if "sd_notify" in r.message]) == 1
    # The manager's socket appears: delivery resumes.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "gone.sock"))
    sock.settimeout(2)
    assert n.status("y") and received(sock) == ["STATUS=y"]
    sock.close()


def test_listen_fds_ignores_another_process_env():
    assert listen_fds({"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}) == []
    assert listen_fds({}) == []


@needs(shutil.which("systemd-socket-activate") is not None, "needs systemd-socket-activate")
def test_socket_activation_end_to_end(tmp_path):
    # systemd-socket-activate binds the socket and execs the child with LISTEN_FDS=1, like systemd.
    path = tmp_path / "act.sock"
    script = (
        "import socket, os\n"
        "from autogit.agent.systemd import listen_fds\n"
        "socks = listen_fds()\n"
        "assert 'LISTEN_FDS' not in os.environ\n"
        "conn, _ = socks[0].accept()\n"
        "conn.sendall(f'fds={len(socks)} family={socks[0].family.name}'.encode())\n"
        "conn.close()\n"
    )
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(path), sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if path.exists():
                break
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(path))
            assert client.recv(100) == b"fds=1 family=AF_UNIX"
    finally:
        proc.terminate()
        proc.wait(10)
