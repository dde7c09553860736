"""Who is on the other end of the socket, and what they may do.

The socket file's mode (0660, group `api.group`) is the outer gate; this is the inner one, so a
mis-set mode or a socket inherited through socket activation still cannot be used to act. The
kernel tells us the peer's uid/gid (SO_PEERCRED, sampled at connect()); the gid is the primary
group only, so supplementary groups come from the user database (os.getgrouplist).

Access levels: root, the agent's own uid and members of `admin_group` may act (POST); members of
`group` (or `admin_group`) may read; everyone else gets 403.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Access", "Peer", "access_for", "peer_of"]

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


class Access(IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    user: str | None  # None: the uid has no passwd entry
    groups: frozenset[int]

    @property
    def label(self) -> str:
        """How the peer appears in events and logs, e.g. 'alice (uid 1001)'."""
        return f"{self.user} (uid {self.uid})" if self.user else f"uid {self.uid}"


def peer_of(sock: socket.socket) -> Peer:
    """The connected peer of a unix socket; OSError if the kernel cannot tell."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return Peer(pid, uid, gid, None, frozenset({gid}))
    try:
        groups = frozenset(os.getgrouplist(name, gid))
    except OSError:
        groups = frozenset({gid})
    return Peer(pid, uid, gid, name, groups)


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
