"""A TCP port on 127.0.0.1 that nothing listens on (the OS picked it free a moment ago): for a
rendezvous of launched ranks, or as a server that is not there."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
