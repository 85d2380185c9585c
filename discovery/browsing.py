"""Which service types discoveryd follows on the network, for whom, and until when; no I/O.

Theory of operation
-------------------
A ``lookup`` or ``watch`` of a type makes the mDNS adapter browse it: a python-zeroconf
browser that keeps querying the LAN for the type and holds what it learns. Each one costs
memory in the daemon and multicast traffic on the LAN, so a type is browsed only while
someone needs it:

- while at least one connection watches it;
- and for ``idle`` seconds after it was last needed: after a lookup's answer (a first lookup
  waits up to ``wait`` seconds for the LAN, so that counts from the end of its wait), or
  after its last watcher left (a client library that reconnects re-subscribes within that
  time and finds the browser's knowledge intact).

Then ``expire`` names it, and the adapters stop its browser and forget what they learnt
through it.

Caps: at most ``max_types`` types are browsed at once, and one connection watches at most
``max_watches`` types. A watch past either is refused (``too-many-browsed-types``,
``too-many-watches``): a watch without a browser would never hear of a change. A lookup of a
new type while ``max_types`` are browsed is not refused: it is answered from what the daemon
knows already, without browsing (``Need.FULL``). A browsed type is never evicted to make room
for a new one: eviction would let a client start browsers, and their queries, as fast as it
sends lookups, while without it a slot takes a new type at most once per ``idle`` seconds, so
at most ``max_types`` browsers start in any ``idle`` seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable

from discovery.registry import RegistryError, normalize_type

__all__ = ["BrowseTable", "Need"]


class Need(enum.Enum):
    """What a lookup or watch of a type asks of the adapters."""

    NEW = "new"  # start browsing it
    BROWSING = "browsing"  # it is browsed already
    FULL = "full"  # not browsed, and no room: answer from what is known


class BrowseTable:
    """The browsed types, their watchers and how long each type is kept after its last use.

    Types are keyed as the registry keys them (normalised, lower case). ``clock`` gives
    seconds; nothing here reads a clock of its own. The limits come from the policy file
    (``Policy.max_browsed_types`` and the next two).
    """

    def __init__(self, clock: Callable[[], float], *, max_types: int, max_watches: int, idle: float) -> None:
        self.clock = clock
        self.max_types = max_types
        self.max_watches = max_watches
        self.idle = idle
        self._watchers: dict[str, set[Hashable]] = {}  # every browsed type -> who watches it
        self._watched: dict[Hashable, set[str]] = {}  # connection -> the types it watches
        self._until: dict[str, float] = {}  # browsed type -> kept at least until then

    def __len__(self) -> int:
        return len(self._watchers)

    def __contains__(self, type_: str) -> bool:
        return _key(type_) in self._watchers

    def watches(self, conn: Hashable) -> int:
        return len(self._watched.get(conn, ()))

    def lookup(self, type_: str, wait: float = 0.0) -> Need:
        """A lookup of ``type_`` that answers after ``wait`` seconds at most."""
        t = _key(type_)
        need = self._take(t)
        if need is not Need.FULL:
            self._keep(t, self.clock() + wait + self.idle)
        return need

    def watch(self, conn: Hashable, type_: str) -> Need:
        """``conn`` watches ``type_`` (again, which changes nothing); raises ``RegistryError``
        past a cap."""
        t = _key(type_)
        mine = self._watched.get(conn, set())
        if t in mine:
            return Need.BROWSING
        if len(mine) >= self.max_watches:
            raise RegistryError("too-many-watches", f"this connection already watches {len(mine)} service types "
                                f"([limits] watches-per-connection = {self.max_watches} in the policy file)")
        need = self._take(t)
        if need is Need.FULL:
            raise RegistryError("too-many-browsed-types", f"discoveryd already browses {len(self._watchers)} service "
                                f"types, which other clients use ([limits] browsed-types = {self.max_types} "
                                "in the policy file)")
        self._watchers[t].add(conn)
        self._watched.setdefault(conn, set()).add(t)
        return need

    def unwatch(self, conn: Hashable, type_: str) -> None:
        t = _key(type_)
        mine = self._watched.get(conn)
        if mine is None or t not in mine:
            return
        mine.discard(t)
        if not mine:
            del self._watched[conn]
        self._release(conn, t)

    def connection_lost(self, conn: Hashable) -> None:
        for t in self._watched.pop(conn, ()):
            self._release(conn, t)

    def expire(self) -> list[str]:
        """The types nobody watches whose time ran out: no longer browsed from now on."""
        now = self.clock()
        gone = [t for t, until in self._until.items() if until <= now and not self._watchers[t]]
        for t in gone:
            del self._until[t], self._watchers[t]
        return gone

    def next_expiry(self) -> float | None:
        """When ``expire`` has something to say next, if ever (while no watch or lookup changes it)."""
        return min((u for t, u in self._until.items() if not self._watchers[t]), default=None)

    def _take(self, t: str) -> Need:
        if t in self._watchers:
            return Need.BROWSING
        if len(self._watchers) >= self.max_types:
            return Need.FULL
        self._watchers[t] = set()
        self._until[t] = self.clock()
        return Need.NEW

    def _keep(self, t: str, until: float) -> None:
        self._until[t] = max(self._until[t], until)

    def _release(self, conn: Hashable, t: str) -> None:
        watchers = self._watchers[t]
        watchers.discard(conn)
        if not watchers:
            self._keep(t, self.clock() + self.idle)


def _key(type_: str) -> str:
    return normalize_type(type_).lower()
