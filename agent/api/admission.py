"""Who gets one of the socket's connection slots (pure bookkeeping; the server acts on it).

A connection is judged once, when it opens, from the peer's credentials:

- a peer without access never holds a slot: it is answered 403 and closed;
- a uid holds at most `per_uid` slots (root included), so one local user cannot take them all;
- readers share `max_connections` slots; admins may use `admin_reserve` more, so readers
  holding every general slot cannot lock the operators out;
- a refused connection is answered politely (403/503 JSON, then closed; the server gives it a
  short deadline) only while few are: at most `REFUSING_PER_UID` per uid and `REFUSING_MAX` in all.
  Beyond that it is closed at once without an answer, so refusals cannot use up file descriptors
  either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from .auth import Access

__all__ = ["REFUSING_MAX", "REFUSING_PER_UID", "Admission", "ConnectionSlots", "Verdict"]

REFUSING_PER_UID = 4  # refused connections of one uid waiting for their polite answer
REFUSING_MAX = 64  # ... and of everyone


class Verdict(StrEnum):
    """Also the `reason` label of autogit_api_refusals_total for the refused ones."""

    ADMITTED = "admitted"
    FORBIDDEN = "forbidden"  # no access at all
    UID_QUOTA = "uid-connections"  # the uid holds max_connections_per_uid already
    FULL = "connections"  # every slot this peer may use is taken


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    uid: int  # -1: the kernel could not say who the peer is
    polite: bool  # refused ones: answered (True) or closed at once (False)


class ConnectionSlots:
    def __init__(self, max_connections: int, per_uid: int, admin_reserve: int) -> None:
        self.max_connections = max_connections
        self.per_uid = per_uid
        self.admin_reserve = admin_reserve
        self._held: Counter[int] = Counter()
        self._refusing: Counter[int] = Counter()

    @property
    def held(self) -> int:
        return self._held.total()

    @property
    def refusing(self) -> int:
        return self._refusing.total()

    def admit(self, uid: int, access: Access) -> Admission:
        if access is Access.NONE:
            verdict = Verdict.FORBIDDEN
        elif self._held[uid] >= self.per_uid:
            verdict = Verdict.UID_QUOTA
        elif self.held >= self.max_connections + (self.admin_reserve if access is Access.ADMIN else 0):
            verdict = Verdict.FULL
        else:
            self._held[uid] += 1
            return Admission(Verdict.ADMITTED, uid, polite=True)
        if self._refusing[uid] >= REFUSING_PER_UID or self.refusing >= REFUSING_MAX:
            return Admission(verdict, uid, polite=False)
        self._refusing[uid] += 1
        return Admission(verdict, uid, polite=True)

    def release(self, admission: Admission) -> None:
        """The connection closed; call once per admit()."""
        if admission.verdict is Verdict.ADMITTED:
            counts = self._held
        elif admission.polite:
            counts = self._refusing
        else:
            return
        counts[admission.uid] -= 1
        if counts[admission.uid] <= 0:
            del counts[admission.uid]
