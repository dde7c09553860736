"""Socket clients that run as another uid, primary gid and supplementary groups: a child Python
that the kernel sees as that user. subprocess sets the credentials (setgroups, setgid, setuid)
between fork and exec, so nothing runs in the forked copy of this multi-threaded test process.

The credentials are the child process's own, which is the point: the agent must judge them from
the connection (SO_PEERCRED, SO_PEERGROUPS), not from /etc/passwd or /etc/group, so the uid
need not exist and the groups need not match /etc/group. Needs root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

# The child: open N connections (sending REQUEST on each and reading its status line, if given),
# print the statuses as one JSON line, then on each "check" line on stdin print how many of the
# connections the agent has closed; exit at EOF.
_CHILD = r"""
import json, socket, sys
path, count, request = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
held, statuses = [], []
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(path)
    except OSError as exc:
        statuses.append(type(exc).__name__)
        continue
    held.append(sock)
    if not request:
        statuses.append(None)
        continue
    head = b""
    try:
        sock.sendall(request)
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError as exc:
        statuses.append(type(exc).__name__)
        continue
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else "closed"
    if status == 200:  # an event stream goes on: keep it open, unread
        statuses.append(200)
        continue
    try:  # a refusal: the agent closes the connection after it (Connection: close otherwise)
        while chunk := sock.recv(65536):
            head += chunk
    except OSError:
        pass
    statuses.append([status, head.partition(b"\r\n\r\n")[2].decode(errors="replace")])
print(json.dumps(statuses), flush=True)
for line in sys.stdin:
    closed = 0
    for sock in held:
        sock.setblocking(False)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    print(json.dumps({"closed": closed, "held": len(held)}), flush=True)
"""
PYTHON = os.path.realpath(sys.executable)  # the system interpreter: the venv may not be readable by others


@dataclass(frozen=True)
class As:
    """Whom the child runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = field(default_factory=tuple)


class Connections:
    """`count` connections held open by a child running as `who` until close()."""

    def __init__(self, path: str, count: int, who: As, request: str = "") -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-I", "-S", "-c", _CHILD, path, str(count), request],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
            user=who.uid, group=who.gid, extra_groups=list(who.groups),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child client failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.statuses: list[Any] = json.loads(line)

    def check(self) -> dict[str, int]:
        """How many of its connections the agent has closed so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request_line(method: str, url: str) -> str:
    return f"{method} {url} HTTP/1.1\r\nHost: autogit\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def request_as(path: str, who: As, method: str = "GET", url: str = "/v1/status") -> Any:
    """One request as `who`: 200, [status, head-and-body-so-far] for another status, or the name
    of the error (e.g. 'PermissionError' when the socket file's mode keeps it out)."""
    with Connections(path, 1, who, request_line(method, url)) as conn:
        return conn.statuses[0]
