"""DNS over UDP by hand (RFC 1035 wire format), enough for the compose tests: one question, A and
AAAA answers, the rcode and the authoritative-answer flag."""

from __future__ import annotations

import random
import socket
import struct

A, AAAA = 1, 28


def query(port: int, name: str, qtype: int = A, timeout: float = 3) -> tuple[int, bool, list[str]]:
    """One UDP query to 127.0.0.1:port: (rcode, authoritative, [A/AAAA answers])."""
    qid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid
    pos = 12
    for _ in range(qd):
        pos = skip_name(data, pos) + 4
    answers = []
    for _ in range(an):
        pos = skip_name(data, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos : pos + 10])
        rdata = data[pos + 10 : pos + 10 + rdlen]
        if rtype == A:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == AAAA:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        pos += 10 + rdlen
    return flags & 0xF, bool(flags & 0x0400), answers


def skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n
