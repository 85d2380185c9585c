"""Latency bookkeeping: a sliding-window percentile for the hedge delay, and a
fixed-bucket histogram for metrics."""

from __future__ import annotations

import bisect
from collections import deque


class PercentileWindow:
    """The last ``size`` latencies; ``percentile(q)`` is recomputed every ``every`` new
    samples so a call costs O(1) amortised, not a sort."""

    def __init__(self, size: int = 512, every: int = 16) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._every = every
        self._since = 0
        self._cache: dict[float, float] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= self._every:
            self._since = 0
            self._cache.clear()

    def percentile(self, q: float) -> float | None:
        if not self._samples:
            return None
        found = self._cache.get(q)
        if found is None:
            ordered = sorted(self._samples)
            index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
            found = self._cache[q] = ordered[index]
        return found


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


class Ewma:
    """Exponentially weighted moving average of latency, for ranking replicas."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.value: float | None = None

    def add(self, seconds: float) -> None:
        if self.value is None:
            self.value = seconds
        else:
            self.value += self.weight * (seconds - self.value)
