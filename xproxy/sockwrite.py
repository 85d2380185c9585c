"""Writing to a Twisted socket transport without waiting for the next reactor turn.

`transport.write` only queues: the bytes leave when the reactor next polls the socket for
writability. For a relay that is one extra event-loop turn per hop and per direction, which is
where a plain Twisted relay loses most of its time on round trips (DESIGN.md: 0.37x direct on
x11perf -prop). When nothing is queued, sending at once is what the kernel would have done
anyway; whatever the socket does not take goes through `transport.write` as usual, so ordering,
buffering and producer backpressure stay Twisted's.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.abstract import FileDescriptor


def direct_writer(transport) -> Callable[[bytes], None]:  # type: ignore[no-untyped-def]
    """A write function for `transport`: direct when it is a plain socket transport with an
    empty queue, else `transport.write`."""
    sock = getattr(transport, "socket", None)
    if not isinstance(transport, FileDescriptor) or sock is None or not hasattr(
        transport, "_tempDataBuffer"
    ):
        return transport.write
    send = sock.send
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
