"""Socket options the adapters set on their TCP connections."""

from __future__ import annotations

import socket
from typing import Any


def nodelay(transport: Any) -> None:
    """Turn off Nagle's algorithm on a TCP transport (or the TCP transport a TLS transport
    wraps), so small X11 messages leave at once; a unix socket is left alone."""
    for t in (transport, getattr(transport, "transport", None)):
        sock = getattr(t, "socket", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return
