"""Counting one connection's requests and round trips from message headers, for metrics.

Theory of operation: metrics need no message bodies, only what each header says, and the
framers read every header anyway. So the framers count, as they frame: the client framer
counts each request by opcode (by major and minor for an extension's) and notes the time of
each request that may have a reply; the server framer, which already follows the full
sequence number of every message, matches each reply to the oldest such note with its number
and takes the latency. Requests that pass in bulk (`framing.skip_requests`, the C loop) are
counted there by opcode, so the loop still runs with metrics on; only requests that may have
a reply, and extension requests (whose minor opcode names them), are framed one by one.

Nothing is copied and nothing is decoded. Names are given when the counts are read
(`requests()`), from the extensions this connection's QueryExtension replies reported.
Bytes and messages each way are the framers' own counts: the connection a tally is given to
sets itself as the tally's `connection`.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .decode.tables import CORE_REPLIES, extension_replies, request_name
from .opcodes import FIRST_EXTENSION_OPCODE, REPLY
from .traffic import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .connection import X11Connection

__all__ = ["LATENCY_BUCKETS", "MAX_PENDING", "Tally"]

#: Requests awaiting a reply that are remembered, the oldest forgotten first. The server's
#: 16-bit sequence numbers cannot tell further ones apart anyway.
MAX_PENDING = 1 << 16


class Tally:
    """The counts of one connection; `clock` gives the times latencies are taken in."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        #: requests by major opcode below 128 (skip_requests adds to it in bulk)
        self.core = array("Q", bytes(256 * 8))
        #: extension requests by major << 8 | minor
        self.ext: dict[int, int] = {}
        #: major opcode -> (extension name, per minor: may it have a reply)
        self.majors: dict[int, tuple[str, bytes]] = {}
        #: (full sequence number, time) of requests that may have a reply, oldest first
        self.pending: deque[tuple[int, float]] = deque(maxlen=MAX_PENDING)
        self.round_trips = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0
        #: counts per LATENCY_BUCKETS slot, the last one for anything larger
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        #: the connection counted (which sets it)
        self.connection: X11Connection | None = None

    def stops(self, op: int) -> bool:
        """Whether a request with major opcode `op` must be framed one by one to be counted
        (it may have a reply, or it is an extension's)."""
        return op >= FIRST_EXTENSION_OPCODE or bool(CORE_REPLIES[op])

    def request(self, op: int, minor: int, seq: int) -> None:
        """The client framer read the header of request `seq`."""
        if op < FIRST_EXTENSION_OPCODE:
            self.core[op] += 1
            if CORE_REPLIES[op]:
                self.pending.append((seq, self.clock()))
            return
        key = op << 8 | minor
        ext = self.ext
        ext[key] = ext.get(key, 0) + 1
        known = self.majors.get(op)
        if known is None or known[1][minor]:
            self.pending.append((seq, self.clock()))

    def server(self, kind: int, seq: int) -> None:
        """The server framer read the header of a message with full sequence number `seq`:
        an error (kind 0), a reply (1) or an event."""
        pending = self.pending
        while pending and pending[0][0] < seq:
            pending.popleft()
        if kind <= REPLY and pending and pending[0][0] == seq:
            sent = pending.popleft()[1]
            if kind == REPLY:  # (later replies to the same request find nothing: one round trip)
                latency = self.clock() - sent
                self.round_trips += 1
                self.latency_sum += latency
                self.latency_max = max(self.latency_max, latency)
                self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1

    def extension(self, name: str, major: int) -> None:
        """A QueryExtension reply said extension `name` has major opcode `major`."""
        self.majors[major] = (name, extension_replies(name))

    def requests(self) -> Counter[str]:
        """Requests so far by name."""
        out: Counter[str] = Counter()
        for op, count in enumerate(self.core):
            if count:
                out[request_name(op, 0, None)] += count
        for key, count in self.ext.items():
            known = self.majors.get(key >> 8)
            out[request_name(key >> 8, key & 0xFF, known[0] if known else None)] += count
        return out
