"""The relay's socket fast paths, for Twisted socket transports.

Writing: `transport.write` only queues, and the bytes leave when the reactor next polls the
socket for writability: one extra event-loop turn per hop and per direction, which is where a
plain Twisted relay loses most of its time on round trips (DESIGN.md: 0.37x direct on x11perf
-prop). When nothing is queued, sending at once is what the kernel would have done anyway;
whatever the socket does not take goes through `transport.write` as usual, so ordering,
buffering and producer backpressure stay Twisted's.

Reading: Twisted's unix transports read with recvmsg (to receive file descriptors, which X11
never sends) in 64 KiB pieces; the relay reads with recv, in 256 KiB pieces, and hands the
bytes straight to the protocol. Everything else (pausing, EOF, errors, connectionLost) stays
Twisted's: the reactor still calls `doRead`, and a return value other than None still closes
the connection the way Twisted does.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import main
from twisted.internet.abstract import FileDescriptor

READ_SIZE = 256 * 1024


def _plain_socket_transport(transport) -> bool:  # type: ignore[no-untyped-def]
    return (isinstance(transport, FileDescriptor) and getattr(transport, "socket", None) is not None
            and hasattr(transport, "_tempDataBuffer") and hasattr(transport, "protocol"))


def direct_writer(transport) -> Callable[[bytes], None]:  # type: ignore[no-untyped-def]
    """A write function for `transport`: direct when it is a plain socket transport with an
    empty queue, else `transport.write`. The caller must not write once it has closed the
    transport (an asyncio transport's own write, which this returns for one, would raise)."""
    raw = getattr(transport, "raw_write", None)
    if raw is not None:
        return raw  # type: ignore[no-any-return]
    if not _plain_socket_transport(transport):
        return transport.write
    send = transport.socket.send
    fallback = transport.write

    def write(data: bytes) -> None:
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


def fast_reads(transport) -> None:  # type: ignore[no-untyped-def]
    """Make `transport` read with recv() into the protocol (see the module docstring)."""
    if not _plain_socket_transport(transport):
        return
    recv = transport.socket.recv
    transport.bufferSize = READ_SIZE

    def doRead():  # type: ignore[no-untyped-def]
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
