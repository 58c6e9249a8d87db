"""Loopback ports for the servers tests start (workers' web ports, brokers, PostgreSQL,
Prometheus, moto).

Under pytest-xdist several test processes start servers at once. A port the kernel called
free (bind to port 0, then close) can be handed out again before the server binds it: to
another test process doing the same, or as the source port of any client connection. Both
happened: a worker's readiness probe then reached another module's worker. So each test
process takes ports from a slice of its own below the kernel's ephemeral range (32768 and
up by default on Linux, where source ports come from), in turn, and only ports free now.
"""

from __future__ import annotations

import itertools
import os
import socket

BASE = 20000
SLICE = 1500
SLICES = 8  # 20000-31999
_turn = itertools.count()


def _slice_start() -> int:
    """This process's slice: from pytest-xdist's worker name (gw0, gw1, ...), else the first."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(name[2:]) if name[2:].isdigit() else 0
    return BASE + (index % SLICES) * SLICE


def _free_now(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """The next port of this process's slice that nothing is bound to now."""
    start = _slice_start()
    for _ in range(SLICE):
        port = start + next(_turn) % SLICE
        if _free_now(port):
            return port
    raise RuntimeError(f"no free port in {start}-{start + SLICE - 1}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (a Kafka cluster's listeners)."""
    return [free_port() for _ in range(count)]
