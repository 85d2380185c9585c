"""Hinted handoff, pure: the writes a stub could not deliver to one replica, kept to
be replayed, in tag order, when it is back (as Dynamo and Cassandra do).

The queue is bounded by count and bytes. Past either bound it drops everything it
holds and marks the replica as needing a full sync (``replicaclient.sync``), which
copies the newest state of every register instead; until that sync is done new
writes are not queued (the sync will carry them too).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tag import Tag


@dataclass(frozen=True)
class Hint:
    """One undelivered write: its tag (the replay order) and its encoded request."""

    tag: Tag
    head: bytes
    command: bytes

    @property
    def size(self) -> int:
        return len(self.head) + len(self.command)


class HintQueue:
    def __init__(self, max_count: int = 10_000, max_bytes: int = 16 << 20) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._hints: dict[Tag, Hint] = {}
        self.bytes = 0
        self.overflowed = False
        """Hints were dropped: only a full sync can bring the replica up to date."""

    def __len__(self) -> int:
        return len(self._hints)

    def add(self, hint: Hint) -> int:
        """Keep ``hint``; returns how many hints were dropped (0 while within bounds)."""
        if self.overflowed:
            return 1
        if hint.tag in self._hints:
            return 0
        if (len(self._hints) + 1 > self.max_count
                or self.bytes + hint.size > self.max_bytes):
            dropped = len(self._hints) + 1
            self._hints.clear()
            self.bytes = 0
            self.overflowed = True
            return dropped
        self._hints[hint.tag] = hint
        self.bytes += hint.size
        return 0

    def take(self) -> list[Hint]:
        """Every hint, oldest tag first; the queue is left empty."""
        hints = sorted(self._hints.values(), key=lambda h: h.tag)
        self._hints.clear()
        self.bytes = 0
        return hints

    def synced(self) -> None:
        """A full sync brought the replica up to date: queue again from now on."""
        self.overflowed = False
