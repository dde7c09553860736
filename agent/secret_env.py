"""Taking a secret out of the process environment once it is read.

`os.environ.pop` alone is not enough: it unsets the variable for the process's children, but
/proc/<pid>/environ shows the environment block the kernel copied in at exec, which unsetenv()
leaves untouched, so the value stays readable there (by root, and by the same user where
ProtectProc= allows it). `take` therefore also overwrites the variable's bytes in that block:
after it, neither the agent's /proc/<pid>/environ nor any child it starts carries the secret.
Only bytes inside the kernel's block (env_start..env_end of /proc/self/stat) are touched: a
string that setenv() put on the heap belongs to libc and is left alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import MutableMapping

__all__ = ["take"]

def _env_block() -> tuple[int, int] | None:
    """The kernel's environment block of this process, [start, end), from /proc/self/stat
    (fields 50 and 51, proc(5)); None where it cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
        return int(fields[50 - 3]), int(fields[51 - 3])
    except (OSError, ValueError, IndexError):
        return None


def _entries_in_block(name: str) -> list[tuple[int, int]]:
    """(address, length) of every `name=value` string of the C environment that lies in the
    kernel's block."""
    block = _env_block()
    if block is None:
        return []
    start, end = block
    try:
        environ = ctypes.POINTER(ctypes.c_void_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError):
        return []
    prefix = name.encode() + b"="
    found = []
    i = 0
    while (address := environ[i]) is not None:
        entry = ctypes.string_at(address)
        if entry.startswith(prefix) and start <= address and address + len(entry) <= end:
            found.append((address, len(entry)))
        i += 1
    return found


def take(name: str, environ: MutableMapping[str, str] | None = None) -> str | None:
    """The variable's value (None: unset or empty), removed from `environ` (default
    os.environ, and then from this process's /proc/<pid>/environ as well)."""
    if environ is not None and environ is not os.environ:
        return environ.pop(name, None) or None
    if name not in os.environ:
        return None
    entries = _entries_in_block(name)
    value = os.environ.pop(name)  # unsetenv(): children no longer inherit it
    for address, length in entries:  # no longer referenced by environ[]: overwrite in place
        ctypes.memset(address, 0, length)
    return value or None
