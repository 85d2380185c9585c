"""Counters and histograms the stub keeps per replica (and a few per client)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .latency import Histogram


@dataclass
class ReplicaMetrics:
    latency: Histogram = field(default_factory=Histogram)
    sent: int = 0
    answers: int = 0
    won: int = 0
    """Calls whose result was this replica's answer."""
    failures: int = 0
    ejections: int = 0
    hedges_sent: int = 0
    hedges_won: int = 0
    outstanding: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "answers": self.answers, "won": self.won, "failures": self.failures,
            "ejections": self.ejections, "hedges_sent": self.hedges_sent,
            "hedges_won": self.hedges_won, "outstanding": self.outstanding,
            "latency_count": self.latency.count,
            "latency_sum": self.latency.total,
            "latency_buckets": self.latency.cumulative(),
        }


@dataclass
class ClientMetrics:
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    replicas: dict[str, ReplicaMetrics] = field(default_factory=dict)

    def replica(self, name: str) -> ReplicaMetrics:
        found = self.replicas.get(name)
        if found is None:
            found = self.replicas[name] = ReplicaMetrics()
        return found

    @property
    def requests(self) -> int:
        """Messages sent to replicas, all stages and kinds."""
        return sum(r.sent for r in self.replicas.values())

    @property
    def hedges_sent(self) -> int:
        return sum(r.hedges_sent for r in self.replicas.values())

    @property
    def hedges_won(self) -> int:
        return sum(r.hedges_won for r in self.replicas.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "succeeded": self.succeeded, "failed": self.failed,
            "retries": self.retries, "requests": self.requests,
            "hedges_sent": self.hedges_sent, "hedges_won": self.hedges_won,
            "replicas": {name: r.snapshot() for name, r in sorted(self.replicas.items())},
        }

