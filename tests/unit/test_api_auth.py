"""The socket peer's identity as the kernel reports it (with real users and groups:
tests/integration/test_api_permissions.py)."""

from __future__ import annotations

import logging
import os
import socket
import struct

from autogit.agent.api import auth
from autogit.agent.api.auth import Access, Peer, access_for, peer_groups, peer_of


def test_a_socketpair_peer_has_this_process_groups():
    a, b = socket.socketpair()
    with a, b:
        peer = peer_of(a)
        assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
        assert peer_groups(a.fileno()) == frozenset(os.getgroups())
        assert peer.groups == frozenset(os.getgroups()) | {os.getegid()}


class _NoGroupsSocket:
    """A peer the kernel reports credentials for but no groups (as Linux before 4.13): its
    getsockopt answers SO_PEERCRED, and its descriptor is a pipe, where SO_PEERGROUPS fails."""

    def __init__(self, uid: int, gid: int) -> None:
        self.read_end, self.write_end = os.pipe()
        self.ucred = struct.pack("3i", 4242, uid, gid)

    def fileno(self) -> int:
        return self.read_end

    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes:
        assert (level, optname) == (socket.SOL_SOCKET, socket.SO_PEERCRED)
        return self.ucred

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


def test_groups_the_kernel_cannot_list_are_not_memberships(monkeypatch, caplog):
    monkeypatch.setattr(auth, "_warned_no_groups", False)
    sock = _NoGroupsSocket(uid=61020, gid=61020)
    try:
        assert peer_groups(sock.fileno()) is None
        with caplog.at_level(logging.WARNING):
            peer = peer_of(sock)
            peer_of(sock)
    finally:
        sock.close()
    assert peer.groups == frozenset({61020})  # the primary group only, never /etc/group's
    assert [r.message for r in caplog.records].count(
        "the kernel does not report socket peers' groups (SO_PEERGROUPS); only their primary group counts"
    ) == 1


def test_access_levels():
    stranger = Peer(1, 61021, 61021, None, frozenset({61021}))
    assert access_for(stranger, "root", "root") is Access.NONE
    assert access_for(Peer(1, 61021, 61021, None, frozenset({61021, 0})), "root", "no-such-group") is Access.READ
    assert access_for(Peer(1, 0, 0, "root", frozenset({0})), "no-such-group", "no-such-group") is Access.ADMIN
