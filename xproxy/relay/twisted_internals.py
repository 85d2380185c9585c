"""Every use the relay makes of Twisted's private attributes, in one place, each one checked
against the installed Twisted by tests/xproxy/test_twisted_internals.py so that an upgrade
that changes one fails that test by name instead of quietly turning a fast path off.

The API:

- `event_loop(reactor)`: the asyncio loop under Twisted's asyncio reactor, so that the relay's
  sockets can use the loop's own transports (`aiotransport.py`). Read from the reactor's
  private `_asyncioEventloop`; Twisted has no public accessor.
- `direct_writer(transport)`: a write function that sends at once when nothing is queued.
  `transport.write` only queues, and the bytes leave when the reactor next polls the socket
  for writability: one extra event-loop turn per hop and per direction, where a plain Twisted
  relay loses most of its time on round trips (DESIGN.md: 0.37x direct on x11perf -prop).
  Whatever the socket does not take goes through `transport.write` as usual, so ordering,
  buffering and producer backpressure stay Twisted's. Reads `socket`, `_tempDataBuffer`,
  `dataBuffer`, `connected` and `disconnecting` of a socket transport.
- `fast_reads(transport)`: read with recv() in 256 KiB pieces straight into the protocol,
  where Twisted's unix transports read with recvmsg (for file descriptors, which X11 never
  sends) in 64 KiB pieces. Replaces the transport's `doRead` (the reactor looks it up on each
  readable event) and sets its `bufferSize`; pausing, EOF, errors and connectionLost stay
  Twisted's, since a return value other than None still closes the connection Twisted's way.
- `nodelay(transport)`: TCP_NODELAY on the TCP socket under a transport (or under the
  transport a TLS transport wraps), through the transport's `socket`.

Transports that do not look like Twisted's socket transports (link channels, the asyncio
transports' `aiotransport.TransportShim`, test doubles) get the plain Twisted behaviour.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import main
from twisted.internet.abstract import FileDescriptor

__all__ = [
    "READ_SIZE", "direct_writer", "event_loop", "fast_paths_apply", "fast_reads", "nodelay",
]

#: The most `fast_reads` takes from the kernel in one recv().
READ_SIZE = 256 * 1024


def event_loop(reactor: object) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop under `reactor`, or None when it is not the asyncio reactor."""
    return getattr(reactor, "_asyncioEventloop", None)


def fast_paths_apply(transport: Any) -> bool:
    """Whether `transport` is one of Twisted's socket transports (tcp or unix), with the
    internals `direct_writer` and `fast_reads` rely on; they leave any other alone."""
    return (isinstance(transport, FileDescriptor) and getattr(transport, "socket", None) is not None
            and hasattr(transport, "_tempDataBuffer") and hasattr(transport, "protocol"))


def direct_writer(transport: Any) -> Callable[[bytes | memoryview], None]:
    """A write function for `transport`: direct when it is a plain socket transport with an
    empty queue, else `transport.write`. The caller must not write once it has closed the
    transport (an asyncio transport's own write, which this returns for one, would raise)."""
    raw = getattr(transport, "raw_write", None)
    if raw is not None:
        return raw  # type: ignore[no-any-return]
    if not fast_paths_apply(transport):
        return transport.write  # type: ignore[no-any-return]
    send = transport.socket.send
    fallback = transport.write

    def write(data: bytes | memoryview) -> None:
        if (
            not transport._tempDataBuffer
            and not transport.dataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # let the transport's own write path meet and report the error
            if sent == len(data):
                return
            data = data[sent:]
        fallback(data)

    return write


def fast_reads(transport: Any) -> None:
    """Make `transport` read with recv() into the protocol (see the module docstring)."""
    if not fast_paths_apply(transport):
        return
    recv = transport.socket.recv
    transport.bufferSize = READ_SIZE

    def doRead() -> object:
        try:
            data = recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        transport.protocol.dataReceived(data)
        return None

    transport.doRead = doRead


def nodelay(transport: Any) -> None:
    """Turn Nagle's algorithm off on the TCP socket under `transport`, or under the transport
    it wraps (TLS); nothing for unix sockets or transports without a socket."""
    for t in (transport, getattr(transport, "transport", None)):
        sock = getattr(t, "socket", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            return
