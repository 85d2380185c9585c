"""Replica-side state, pure: the request-id table that deduplicates, and ABD registers.

The Twisted helper in ``replicaclient.server`` consults this for every box; nothing
here knows about AMP or Deferreds.
"""

from __future__ import annotations

import bisect
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .sync import Entry
from .tag import ZERO, Tag


@dataclass
class Register:
    """One register: the tag of the write it holds and that write itself (its command
    and argument box), so a reader can write it back elsewhere."""

    tag: Tag = ZERO
    command: bytes | None = None
    args: dict[bytes, bytes] = field(default_factory=dict)
    response: dict[bytes, bytes] = field(default_factory=dict)

    def copy(self) -> Register:
        return Register(self.tag, self.command, dict(self.args), dict(self.response))


@dataclass
class Pending:
    """A request being answered; duplicates that arrive meanwhile wait in ``waiters``."""

    waiters: list[Any] = field(default_factory=list)


class ReplicaState:
    """Shared by every connection to one replica process.

    ``incarnation`` is random for each process (unless given): a stub that sees it
    change knows the replica restarted, with empty memory, and syncs it."""

    def __init__(self, remember: int = 10000, incarnation: str | None = None) -> None:
        self.remember = remember
        self.incarnation = incarnation or secrets.token_hex(8)
        self.seen: OrderedDict[tuple[bytes, bytes], Any] = OrderedDict()
        self.registers: dict[bytes, Register] = {}
        self.duplicates = 0
        self._names: list[bytes] | None = None
        """The register names, sorted, while no register is added (for paging)."""

    # -- deduplication

    def recall(self, key: tuple[bytes, bytes]) -> Any | None:
        """The stored outcome (or :class:`Pending`) of a request seen before, else None."""
        found = self.seen.get(key)
        if found is not None:
            self.duplicates += 1
            self.seen.move_to_end(key)
        return found

    def begin(self, key: tuple[bytes, bytes]) -> Pending:
        pending = self.seen[key] = Pending()
        while len(self.seen) > self.remember:
            self.seen.popitem(last=False)
        return pending

    def finish(self, key: tuple[bytes, bytes], outcome: Any) -> list[Any]:
        """Store the outcome; returns the waiters to hand it to."""
        pending = self.seen.get(key)
        if key in self.seen:
            self.seen[key] = outcome
        return pending.waiters if isinstance(pending, Pending) else []

    # -- registers

    def register(self, name: bytes) -> Register:
        found = self.registers.get(name)
        return found if found is not None else Register()

    def claim(self, name: bytes, tag: Tag, command: bytes,
              args: dict[bytes, bytes]) -> Register | None:
        """Take ``tag`` for a write about to be applied, if it is newer than the
        register's; returns the previous state (to roll back to), or None if stale."""
        previous = self.register(name)
        if tag <= previous.tag:
            return None
        if name not in self.registers:
            self._names = None
        self.registers[name] = Register(tag, command, dict(args), {})
        return previous

    def page(self, after: bytes | None, limit: int,
             max_bytes: int = 1 << 20) -> tuple[list[Entry], bool]:
        """The registers named after ``after`` (None: from the first), in name order, at
        most ``limit`` of them and about ``max_bytes``; and whether more follow."""
        if self._names is None:
            self._names = sorted(self.registers)
        names = self._names
        at = 0 if after is None else bisect.bisect_right(names, after)
        out: list[Entry] = []
        size = 0
        while at < len(names) and len(out) < limit and size < max_bytes:
            name = names[at]
            at += 1
            reg = self.registers.get(name)
            if reg is None or reg.command is None:
                continue
            args = tuple(sorted(reg.args.items()))
            out.append(Entry(name, reg.tag, reg.command, args))
            size += len(name) + len(reg.command) + sum(len(k) + len(v) for k, v in args) + 40
        return out, at < len(names)

    def applied(self, name: bytes, tag: Tag, response: dict[bytes, bytes]) -> None:
        current = self.registers.get(name)
        if current is not None and current.tag == tag:
            current.response = dict(response)

    def rollback(self, name: bytes, tag: Tag, previous: Register) -> None:
        """The write with ``tag`` failed; undo its claim unless a newer one replaced it."""
        current = self.registers.get(name)
        if current is not None and current.tag == tag:
            self.registers[name] = previous
