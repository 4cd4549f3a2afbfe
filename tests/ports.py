"""Free ports for the servers the tests start (Ray nodes, moto, SeaweedFS) on 127.0.0.1.

Single ports come from the kernel (bind to port 0), all held open together so none is handed out
twice. A range of consecutive ports (Ray's worker ports) is taken *outside* the kernel's ephemeral
range: a range inside it could contain a single port handed out a moment later, and Ray refuses
to start a node whose components share a port.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports from the kernel's ephemeral range."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_range(n: int) -> int:
    """The first of ``n`` consecutive free ports that lie outside the ephemeral range."""
    low, high = ephemeral_range()
    # From 20000: below it is the worker range a local ``ray.init()`` uses (10002-19999).
    spans = [(lo, hi) for lo, hi in ((20000, low - 1), (high + 1, 65535)) if hi - lo + 1 >= n]
    if not spans:  # an unusual ephemeral range: anywhere, the kernel may then hand out one of ours
        spans = [(20000, 65535)]
    for _ in range(100):
        lo, hi = spans[secrets.randbelow(len(spans))]
        base = lo + secrets.randbelow(hi - lo + 2 - n)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports outside {low}-{high}")
