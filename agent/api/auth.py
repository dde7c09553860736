"""Who is on the other end of the socket, and what they may do.

The socket file's mode (0660, group `api.group`) is the outer gate; this is the inner one, so a
mis-set mode or a socket inherited through socket activation still cannot be used to act. The
kernel tells us who the peer was when it called connect(): its uid/gid (SO_PEERCRED) and its
supplementary groups (SO_PEERGROUPS). Both come from the connecting process, never from the user
database: a user removed from a group loses access as soon as their new login lacks it, and a
process that dropped its groups (setgroups) does not get them back. When the kernel cannot list
the groups (Linux before 4.13), the peer is taken to be in its primary group only: an unknown
membership is not a membership.

Access levels: root, the agent's own uid and members of `admin_group` may act (POST); members of
`group` (or `admin_group`) may read; everyone else gets 403.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

__all__ = ["Access", "Peer", "access_for", "peer_groups", "peer_of"]

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}
# Python's socket module lacks the constant; 59 in asm-generic/socket.h, which every architecture
# the agent ships for uses (parisc and sparc differ; the agent does not run there).
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_GID = ctypes.c_uint32  # gid_t
_FIRST_GUESS = 64  # gids; the kernel says how many it has when that is too few (ERANGE)
_warned_no_groups = False


class _Socket(Protocol):
    def fileno(self) -> int: ...
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


class Access(IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str | None  # None: the uid has no passwd entry (only used to name the peer)
    groups: frozenset[int]  # primary and supplementary gids of the connecting process

    @property
    def label(self) -> str:
        """How the peer appears in events and logs, e.g. 'alice (uid 1001)'."""
        return f"{self.user} (uid {self.uid})" if self.user else f"uid {self.uid}"


def _libc_getsockopt() -> Callable[..., int]:
    # Through libc, not socket.getsockopt: CPython caps its buffer at 1024 bytes (256 groups),
    # and a process may have up to NGROUPS_MAX (65536).
    fn = ctypes.CDLL(None, use_errno=True).getsockopt
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    fn.restype = ctypes.c_int
    return fn


_getsockopt = _libc_getsockopt()


def peer_groups(fd: int) -> frozenset[int] | None:
    """The supplementary groups the peer of unix socket `fd` had at connect(); None when the
    kernel cannot say (no SO_PEERGROUPS, or not a connected unix socket)."""
    count = _FIRST_GUESS
    for _ in range(4):  # the peer's credentials are fixed at connect(): one retry is enough
        buf = (_GID * count)()
        size = ctypes.c_uint32(ctypes.sizeof(buf))
        if _getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)) == 0:
            return frozenset(buf[: size.value // ctypes.sizeof(_GID)])
        if ctypes.get_errno() != errno.ERANGE:
            return None
        count = max(count * 2, size.value // ctypes.sizeof(_GID))  # ERANGE: size holds what it needs
    return None


def peer_of(sock: _Socket) -> Peer:
    """The connected peer of a unix socket; OSError if the kernel cannot tell who it is."""
    global _warned_no_groups
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    supplementary = peer_groups(sock.fileno())
    if supplementary is None:
        if not _warned_no_groups:
            _warned_no_groups = True
            log.warning("the kernel does not report socket peers' groups (SO_PEERGROUPS); only their primary group counts")
        supplementary = frozenset()
    try:
        name: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return Peer(pid, uid, gid, name, supplementary | {gid})


def _gid(name: str) -> int | None:
    # Looked up per connection, not cached: an operator may create the group after start.
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def access_for(peer: Peer, group: str, admin_group: str) -> Access:
    if peer.uid == 0 or peer.uid == os.geteuid():
        return Access.ADMIN
    admin_gid = _gid(admin_group)
    if admin_gid is not None and admin_gid in peer.groups:
        return Access.ADMIN
    read_gid = _gid(group)
    if read_gid is not None and read_gid in peer.groups:
        return Access.READ
    return Access.NONE
