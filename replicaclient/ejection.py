"""Outlier ejection: keep traffic away from a replica that keeps failing.

Like Envoy's outlier detection: ``consecutive`` failures in a row eject a replica for
``base`` seconds times the number of times it has been ejected (capped at ``maximum``).
When that time is up the replica is *probing*: it gets one request at a time, alongside
the normal traffic; one success brings it back, one failure ejects it again for longer.
Never more than ``max_fraction`` of the replicas are ejected at once, so a network-wide
problem does not eject everyone (and a single replica is never ejected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["healthy", "ejected", "probing"]


@dataclass
class _Health:
    consecutive: int = 0
    times: int = 0
    until: float | None = None
    probe_in_flight: bool = False
    healthy_since: float = 0.0


class OutlierDetector:
    def __init__(self, consecutive: int = 3, base: float = 1.0, maximum: float = 30.0,
                 max_fraction: float = 0.5) -> None:
        self.consecutive = consecutive
        self.base = base
        self.maximum = maximum
        self.max_fraction = max_fraction
        self._health: dict[str, _Health] = {}
        self._out: set[str] = set()
        """Replicas ejected or probing (``until`` set): when none are, every call can
        skip looking at each replica's health."""

    def add(self, replica: str) -> None:
        self._health.setdefault(replica, _Health())

    def remove(self, replica: str) -> None:
        self._health.pop(replica, None)
        self._out.discard(replica)

    def state(self, replica: str, now: float) -> State:
        h = self._health.get(replica)
        if h is None or h.until is None:
            return "healthy"
        return "ejected" if now < h.until else "probing"

    def ejected_count(self, now: float) -> int:
        return sum(1 for r in self._out if self.state(r, now) != "healthy")

    def split(self, replicas: list[str], now: float) -> tuple[list[str], list[str], list[str]]:
        """Partition into (healthy, ready to probe, ejected). A replica whose probe is
        still out counts as ejected, so it gets one request at a time."""
        if not self._out:
            return list(replicas), [], []
        healthy, probes, ejected = [], [], []
        for r in replicas:
            state = self.state(r, now)
            if state == "healthy":
                healthy.append(r)
            elif state == "probing" and not self._health[r].probe_in_flight:
                probes.append(r)
            else:
                ejected.append(r)
        return healthy, probes, ejected

    def probe_sent(self, replica: str) -> None:
        h = self._health.get(replica)
        if h is not None:
            h.probe_in_flight = True

    def success(self, replica: str, now: float) -> bool:
        """Record an answer; True if it brought the replica back from ejection."""
        h = self._health.get(replica)
        if h is None:
            return False
        h.consecutive = 0
        h.probe_in_flight = False
        if h.until is not None and now >= h.until:
            h.until = None
            h.healthy_since = now
            self._out.discard(replica)
            return True
        if h.until is None and h.times and now - h.healthy_since >= self.maximum:
            h.times = 0  # healthy long enough: forget past ejections
        return False

    def failure(self, replica: str, now: float) -> bool:
        """Record a failure; True if it ejected the replica."""
        h = self._health.get(replica)
        if h is None:
            return False
        h.consecutive += 1
        probing = h.until is not None and now >= h.until
        h.probe_in_flight = False
        if h.until is not None and not probing:
            return False  # already ejected; a late failure changes nothing
        if not probing:
            if h.consecutive < self.consecutive:
                return False
            allowed = int(len(self._health) * self.max_fraction)
            if self.ejected_count(now) >= allowed:
                return False
        h.times += 1
        h.until = now + min(self.maximum, self.base * h.times)
        self._out.add(replica)
        return True
