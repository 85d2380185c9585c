"""Latency bookkeeping: a sliding-window percentile for the hedge delay, and a
fixed-bucket histogram for metrics."""

from __future__ import annotations

import bisect
from collections import deque


class PercentileWindow:
    """The last ``size`` latencies, also kept in order, so ``percentile(q)`` is an
    index: each ``add`` inserts one sample and drops the oldest by bisection (two
    memmoves of at most ``size`` pointers), where sorting the window again would cost
    about 20 µs per 512 samples."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque()
        self._sorted: list[float] = []
        self._size = size

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._samples) > self._size:
            oldest = self._samples.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def percentile(self, q: float) -> float | None:
        ordered = self._sorted
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


# Bucket upper bounds in seconds, as Prometheus' default latency buckets but finer at
# the low end where loopback calls live.
BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, float("inf"),
)


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of observations <= bound), as Prometheus exposes them."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

