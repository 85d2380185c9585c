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
    hints_queued: int = 0
    """Writes kept for a replica that did not get them (hinted handoff)."""
    hints_replayed: int = 0
    hints_dropped: int = 0
    """Hints given up past the queue's bounds (the replica then needs a full sync)."""
    syncs: int = 0
    sync_failures: int = 0
    sync_seconds: Histogram = field(default_factory=Histogram)
    synced_registers: int = 0
    read_repairs: int = 0
    """Writes sent back to a stale replica by a read-repair read."""
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
            "hints_queued": self.hints_queued, "hints_replayed": self.hints_replayed,
            "hints_dropped": self.hints_dropped, "syncs": self.syncs,
            "sync_failures": self.sync_failures, "synced_registers": self.synced_registers,
            "sync_seconds_count": self.sync_seconds.count,
            "sync_seconds_sum": self.sync_seconds.total,
            "read_repairs": self.read_repairs,
            "replicas": {name: r.snapshot() for name, r in sorted(self.replicas.items())},
        }

