"""What one X11 connection did, or many summed: bytes and messages each way, messages by
kind, requests by name, round trips and their reply latencies. The one record of per-connection
totals: the relay's summary on exit, `--stats` and the Prometheus endpoint all read it; the
live counts it is taken from are the connection's (`X11Connection.stats`, the framers' byte
counts) and its tally's (x11/tally.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import X11Connection
    from .tally import Tally

__all__ = ["LATENCY_BUCKETS", "ConnectionMetrics"]

#: Upper bounds (seconds) of the reply latency histogram.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


@dataclass
class ConnectionMetrics:
    """What one client connection (or, summed, a whole proxy) did."""

    client: int = 0
    bytes_from_client: int = 0
    bytes_from_server: int = 0
    messages_from_client: int = 0
    messages_from_server: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    round_trips: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    #: counts per LATENCY_BUCKETS slot, the last one for anything larger
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    @classmethod
    def of(cls, number: int, tally: Tally) -> ConnectionMetrics:
        """What client `number` did so far, from its connection's tally."""
        conn = tally.connection
        m = cls(client=number) if conn is None else cls.of_connection(number, conn)
        m.requests = tally.requests()
        m.round_trips = tally.round_trips
        m.latency_sum, m.latency_max = tally.latency_sum, tally.latency_max
        m.latency_counts = list(tally.latency_counts)
        return m

    @classmethod
    def of_connection(cls, number: int, conn: X11Connection) -> ConnectionMetrics:
        """What client `number`'s connection did so far, from its framers' byte counts and
        its message counts (`X11Connection.stats`); no requests by name or latencies."""
        m = cls(client=number, bytes_from_client=conn.client.bytes,
                bytes_from_server=conn.server.bytes)
        s = conn.stats
        kinds = m.kinds
        kinds["setup"] = int(conn.setup is not None)
        kinds["setup-reply"] = int(conn.setup_reply is not None)
        kinds["request"], kinds["reply"] = s.requests, s.replies
        kinds["event"], kinds["error"] = s.events, s.errors
        m.messages_from_client = kinds["setup"] + s.requests
        m.messages_from_server = kinds["setup-reply"] + s.replies + s.events + s.errors
        return m

    def add(self, other: ConnectionMetrics) -> None:
        self.bytes_from_client += other.bytes_from_client
        self.bytes_from_server += other.bytes_from_server
        self.messages_from_client += other.messages_from_client
        self.messages_from_server += other.messages_from_server
        self.kinds.update(other.kinds)
        self.requests.update(other.requests)
        self.round_trips += other.round_trips
        self.latency_sum += other.latency_sum
        self.latency_max = max(self.latency_max, other.latency_max)
        self.latency_counts = [a + b for a, b in zip(self.latency_counts, other.latency_counts)]

    def summary(self, top: int = 5) -> str:
        k = self.kinds
        mean = self.latency_sum / self.round_trips * 1000 if self.round_trips else 0.0
        busiest = ", ".join(f"{n} {c}" for n, c in self.requests.most_common(top))
        return (
            f"{self.bytes_from_client} bytes in {self.messages_from_client} messages from the "
            f"client ({k['request']} requests), {self.bytes_from_server} bytes in "
            f"{self.messages_from_server} messages from the server ({k['reply']} replies, "
            f"{k['event']} events, {k['error']} errors); {self.round_trips} round trips, "
            f"reply latency mean {mean:.3f} ms, max {self.latency_max * 1000:.3f} ms"
            + (f"; most requests: {busiest}" if busiest else "")
        )
