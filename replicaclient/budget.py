"""The retry budget: a token bucket that limits hedges and retries to a share of traffic.

Like Finagle's RetryBudget and gRPC's retry throttling: every call deposits ``ratio`` of a
token, every hedge or retry withdraws one, so extra requests stay near ``ratio`` of all
calls however sick the replicas are. A small reserve refilled over time
(``min_per_second``) lets a quiet client still hedge now and then.
"""

from __future__ import annotations


class RetryBudget:
    def __init__(self, ratio: float = 0.1, capacity: float = 100.0,
                 min_per_second: float = 5.0, now: float = 0.0) -> None:
        if ratio < 0 or capacity <= 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must be >= 0, capacity > 0")
        self.ratio = ratio
        self.capacity = capacity
        self.min_per_second = min_per_second
        self.tokens = 0.0
        self.reserve = min_per_second
        self._last = now

    def deposit(self) -> None:
        """One call was made."""
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def try_spend(self, now: float) -> bool:
        """Take a token for one hedge or retry, if there is one."""
        elapsed = max(0.0, now - self._last)
        self._last = now
        self.reserve = min(self.min_per_second, self.reserve + elapsed * self.min_per_second)
        if self.tokens >= 1.0 - 1e-9:  # ten deposits of 0.1 sum to 0.999…
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        if self.reserve >= 1.0:
            self.reserve -= 1.0
            return True
        return False

    def available(self, now: float) -> float:
        """Tokens that could be spent at ``now`` (for metrics and tests)."""
        elapsed = max(0.0, now - self._last)
        reserve = min(self.min_per_second, self.reserve + elapsed * self.min_per_second)
        return self.tokens + reserve
