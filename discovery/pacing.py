"""When the mDNS adapter may multicast: RFC 6762 §6 per record, and a budget over all records.

Theory of operation: §6 says a responder MUST NOT multicast a record on an interface until at
least one second has passed since it last did (answering probes to defend a name excepted;
python-zeroconf does that). A local client that registers and withdraws a name in a loop
would otherwise make discoveryd multicast at the loop's rate. So every announcement and
goodbye repeat of a service instance first waits for its instance's slot (`wait_for`), and
the adapter sends whatever is current when the slot comes: the changes in between are
coalesced into one packet, or into none when they cancel out. A first goodbye goes at once,
as other responders send theirs, because the network holds records that are now wrong (a
killed owner is gone elsewhere in milliseconds); it takes the instance's slot, so a name
churned in a loop makes at most an announcement and its goodbye a second. The host's address records, which every
announcement carries, are left out of a packet when they were multicast less than a second
before (`due`). Over all instances, a token bucket (`reserve`, the generic cell rate
algorithm) keeps the first `burst` packets immediate and paces the rest at `rate` a second,
so many names registered at once still go out, only spread.

The first announcement of a name nobody heard of recently goes at once: the fast path
(docs/discovery.md, "Fast publication") costs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Send slots per key (an instance name, or the host's addresses) in `clock`'s time."""

    def __init__(self, clock: Callable[[], float], gap: float = 1.0, rate: float = 20.0,
                 burst: int = 40) -> None:
        self.clock = clock
        self.gap = gap
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self._last: dict[str, float] = {}  # key -> when it was last multicast
        self._tat = float("-inf")  # the bucket's theoretical arrival time

    def wait_for(self, key: str) -> float:
        """Seconds until `key`'s records may be multicast again (0: now)."""
        last = self._last.get(key)
        return 0.0 if last is None else max(0.0, last + self.gap - self.clock())

    def due(self, key: str) -> bool:
        """Whether `key`'s records may go in the packet being sent now; if so, they are
        counted as sent."""
        if self.wait_for(key) > 0:
            return False
        self.sent(key)
        return True

    def reserve(self) -> float:
        """Take the next place in the budget over all keys: seconds to wait for it. A place
        taken is used up, whether or not its packet is sent."""
        now = self.clock()
        at = max(now, self._tat - self.tolerance)
        self._tat = max(self._tat, at) + self.interval
        return at - now

    def sent(self, key: str) -> None:
        """`key`'s records were multicast now."""
        now = self.clock()
        last = self._last
        last[key] = now
        if len(last) > 1024:  # forget the keys whose gap is over: they may go at once anyway
            for k in [k for k, t in last.items() if t + self.gap <= now]:
                del last[k]
