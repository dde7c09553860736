"""`host:port` of the agent's TCP listeners (webhook, /metrics, health probes), read one way."""

from __future__ import annotations

from .digits import parse_uint

__all__ = ["parse_listen"]


def parse_listen(listen: str, field: str | None = None, *, default_host: str | None = None, any_port: bool = False) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port); ValueError (naming `field`) otherwise.
    `default_host`: what an empty host (':9181') means, where one is allowed; `any_port`: port 0
    (the kernel picks a free one) is allowed, for a listener nobody needs to find by its number."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]") or (default_host or "")
    port = parse_uint(port_text, max_digits=5)
    if not sep or not host or port is None or not (0 if any_port else 1) <= port < 65536:
        said = f"{field} must be" if field else "must be"
        raise ValueError(f"{said} host:port with a port from {0 if any_port else 1} to 65535, got {listen[:80]!r}")
    return host, port
