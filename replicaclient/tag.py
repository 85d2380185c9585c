"""Write tags: the (timestamp, client id) order of writes to one register.

Quorum (ABD) writes take the highest timestamp a majority knows plus one; every other
write takes a hybrid logical clock timestamp (:class:`HybridClock`), so concurrent
writers agree on one order and replicas converge on the newest write (last writer wins).

A third field, the client's call sequence number, makes the tags of two concurrent
writes from the same stub distinct too, so equal tags always mean the same write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Tag:
    ts: int
    client: str
    seq: int

    def encode(self) -> bytes:
        return f"{self.ts}:{self.client}:{self.seq}".encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> Tag:
        """Parse a tag from the wire; raises ValueError on anything malformed."""
        ts, client, seq = raw.decode("ascii").split(":")
        if not client.isalnum() and client != "":
            raise ValueError(f"bad client id in tag {raw!r}")
        return cls(int(ts), client, int(seq))


ZERO = Tag(0, "", 0)


LOGICAL_BITS = 16
"""A hybrid timestamp is ``milliseconds << LOGICAL_BITS | logical counter``: one int,
ordered as the (physical, logical) pair it packs."""


def hybrid(ms: int, logical: int = 0) -> int:
    return (ms << LOGICAL_BITS) | logical


def physical_ms(ts: int) -> int:
    """The wall-clock milliseconds a hybrid timestamp carries."""
    return ts >> LOGICAL_BITS


class HybridClock:
    """A hybrid logical clock (Kulkarni et al., 2014) with an injected physical clock.

    ``now_ms`` returns wall-clock milliseconds. Timestamps never go backwards, even when
    the physical clock does, and :meth:`observe` moves the clock past any timestamp seen
    from elsewhere, so a write made after seeing another one is tagged after it."""

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self.now_ms = now_ms
        self.last = 0

    def tick(self) -> int:
        """A new timestamp, above every one issued or observed so far."""
        self.last = max(self.last + 1, hybrid(self.now_ms()))
        return self.last

    def observe(self, ts: int) -> None:
        self.last = max(self.last, ts)
