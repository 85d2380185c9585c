"""The balancer of ``first`` calls: power of two choices over peak-EWMA cost, with an
injected clock and random generator (no timing: time is what the tests say it is)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from replicaclient.balancer import PENALTY, Balancer
from replicaclient.ejection import OutlierDetector

MS = 0.001


def _balancer(seed: int = 7, **kw: float) -> Balancer:
    b = Balancer(rng=random.Random(seed), **kw)
    for name in "abc":
        b.add(name)
    return b


def sequential(b: Balancer, latency: Callable[[str, int], float], calls: int,
               candidates: Callable[[int], list[str]] = lambda i: ["a", "b", "c"],
               start: int = 0) -> list[str]:
    """One call at a time, each to the balancer's first choice, answered after
    ``latency(replica, call number)``; the picks in order."""
    picks = []
    now = getattr(b, "_test_now", 0.0)
    for i in range(start, start + calls):
        pick = b.order(candidates(i), now)[0]
        b.sent(pick, now)
        took = latency(pick, i)
        now += took
        b.answered(pick, took, now)
        now += 0.1 * MS  # the caller's own work between calls
        picks.append(pick)
    b._test_now = now  # type: ignore[attr-defined]
    return picks


def shares(picks: list[str]) -> dict[str, float]:
    counts = Counter(picks)
    return {name: counts[name] / len(picks) for name in "abc"}


def test_load_spreads_over_equal_replicas():
    b = _balancer()
    got = shares(sequential(b, lambda r, i: 1 * MS, 3000))
    assert all(0.28 < share < 0.39 for share in got.values()), got


def test_load_spreads_over_replicas_that_differ_by_noise():
    rng = random.Random(3)
    b = _balancer()
    got = shares(sequential(b, lambda r, i: (1 + rng.random()) * MS, 3000))
    assert all(0.25 < share < 0.42 for share in got.values()), got


def test_a_replica_slow_on_a_random_5_percent_still_gets_a_fair_part():
    # The benchmark's scenario: c answers 10x slower on a random 5% of its calls. One
    # slow answer puts it aside for a few tens of round trips, not for good.
    rng = random.Random(5)

    def latency(replica: str, i: int) -> float:
        return 10 * MS if replica == "c" and rng.random() < 0.05 else 1 * MS

    got = shares(sequential(_balancer(), latency, 4000))
    assert 0.2 < got["c"] < 0.34, got


def test_a_consistently_slow_replica_gets_a_small_share_but_is_still_tried():
    b = _balancer()
    picks = sequential(b, lambda r, i: 10 * MS if r == "c" else 1 * MS, 4000)
    got = shares(picks)
    assert 0.005 < got["c"] < 0.08, got
    assert "c" in picks[-500:]  # tried again now and then, all along


def test_a_temporarily_slow_replica_is_retried_after_it_recovers():
    b = _balancer()
    slow_until = 1000
    picks = sequential(
        b, lambda r, i: 10 * MS if r == "c" and i < slow_until else 1 * MS, 3000)
    assert shares(picks[:slow_until])["c"] < 0.08
    after = shares(picks[slow_until + 200:])
    assert all(0.28 < share < 0.39 for share in after.values()), after


def test_outstanding_requests_make_a_replica_costlier():
    b = _balancer()
    for name in "abc":
        b.sent(name, 0.0)
        b.answered(name, 1 * MS, 1 * MS)
    b.sent("a", 1 * MS)
    b.sent("a", 1 * MS)
    assert b.cost("a", 1 * MS) == pytest.approx(3 * MS)
    # a is never the first choice while it has two requests in flight
    firsts = {b.order(["a", "b", "c"], 1 * MS)[0] for _ in range(200)}
    assert firsts == {"b", "c"}
    assert b.order(["a", "b"], 1 * MS) == ["b", "a"]
    b.answered("a", 1 * MS, 2 * MS)
    b.answered("a", 1 * MS, 2 * MS)
    assert b.cost("a", 2 * MS) == pytest.approx(1 * MS)


def test_with_many_calls_in_flight_the_outstanding_count_spreads_them():
    b = _balancer()
    for name in "abc":
        b.sent(name, 0.0)
        b.answered(name, 1 * MS, 1 * MS)
    b.answered("c", 5 * MS, 1 * MS)  # c looks five times slower
    for _ in range(60):  # sixty calls start before any answers
        b.sent(b.order(["a", "b", "c"], 1 * MS)[0], 1 * MS)
    out = {name: b.loads[name].outstanding for name in "abc"}
    assert out["c"] >= 4 and out["a"] >= 20 and out["b"] >= 20, out
    assert sum(out.values()) == 60


def test_ejected_replicas_are_never_picked():
    b = _balancer()
    detector = OutlierDetector(consecutive=3, base=1.0)
    for name in "abc":
        detector.add(name)
    for _ in range(3):
        detector.failure("c", 0.0)
    b.sent("c", 0.0)
    b.answered("c", 0.1 * MS, 0.1 * MS)  # c would be the cheapest by far

    def healthy(i: int) -> list[str]:
        return detector.split(["a", "b", "c"], 0.5)[0]

    picks = sequential(b, lambda r, i: 1 * MS, 500, candidates=healthy)
    assert set(picks) == {"a", "b"}
    seen = set()
    for _ in range(100):
        order = b.order(healthy(0), 0.5)
        assert "c" not in order
        seen.add(order[0])
    assert seen == {"a", "b"}


def test_a_peak_replaces_the_estimate_and_faster_answers_pull_it_down():
    b = Balancer(memory=10, rng=random.Random(1))
    b.add("a")
    b.sent("a", 0.0)
    b.answered("a", 1 * MS, 1 * MS)
    assert b.estimate("a", 1 * MS) == 1 * MS
    b.sent("a", 1 * MS)
    b.answered("a", 4 * MS, 5 * MS)
    assert b.estimate("a", 5 * MS) == 4 * MS  # the peak, at once
    b.sent("a", 5 * MS)
    b.answered("a", 1 * MS, 6 * MS)
    kept = math.exp(-1 * MS / b.tau)
    assert b.estimate("a", 6 * MS) == pytest.approx(1 * MS + kept * 3 * MS)
    assert 1 * MS < b.estimate("a", 6 * MS) < 4 * MS


def test_the_estimate_decays_while_idle_and_holds_while_busy():
    b = Balancer(memory=10, rng=random.Random(1))
    b.add("a")
    b.sent("a", 0.0)
    b.answered("a", 2 * MS, 2 * MS)
    tau = b.tau
    assert tau == pytest.approx(10 * 2 * MS)
    assert b.estimate("a", 2 * MS + tau) == pytest.approx(2 * MS / math.e)
    b.sent("a", 2 * MS + tau)
    # a request in flight: a stalled replica does not get cheaper the longer it stalls
    assert b.estimate("a", 1000.0) == pytest.approx(2 * MS / math.e)
    assert b.cost("a", 1000.0) == pytest.approx(2 * 2 * MS / math.e)


def test_tau_is_counted_in_round_trips_of_the_service():
    # The same traffic a thousand times slower is balanced the same way.
    def run(unit: float) -> list[str]:
        rng = random.Random(11)
        b = _balancer(seed=4)

        def latency(replica: str, i: int) -> float:
            slow = replica == "c" and rng.random() < 0.1
            return (10 if slow else 1 + rng.random() / 4) * unit

        picks = []
        now = 0.0
        for i in range(2000):
            pick = b.order(["a", "b", "c"], now)[0]
            b.sent(pick, now)
            took = latency(pick, i)
            now += took
            b.answered(pick, took, now)
            now += 0.1 * unit
            picks.append(pick)
        return picks

    fast, slow = run(MS), run(1.0)
    assert sum(x != y for x, y in zip(fast, slow, strict=True)) < 20
    assert Counter(fast)["c"] > 200


def test_unmeasured_replicas_are_tried_but_not_while_their_first_request_is_out():
    b = _balancer()
    b.sent("a", 0.0)
    b.answered("a", 1 * MS, 1 * MS)
    assert b.cost("b", 1 * MS) == 0.0
    b.sent("b", 1 * MS)
    assert b.cost("b", 1 * MS) == PENALTY
    assert b.order(["a", "b"], 1 * MS) == ["a", "b"]
    b.failed("b", 3 * MS, 4 * MS)
    assert b.loads["b"].outstanding == 0 and b.cost("b", 4 * MS) == 0.0


def test_a_failure_counts_only_as_a_peak():
    b = _balancer()
    b.sent("a", 0.0)
    b.answered("a", 2 * MS, 2 * MS)
    b.sent("a", 2 * MS)
    b.failed("a", 0.1 * MS, 2.1 * MS)  # failed fast: no evidence a is fast
    assert b.estimate("a", 2.1 * MS) == 2 * MS
    b.sent("a", 3 * MS)
    b.failed("a", 9 * MS, 12 * MS)
    assert b.estimate("a", 12 * MS) == 9 * MS


def test_the_other_candidates_follow_cheapest_first():
    b = _balancer()
    for name, took in (("a", 1), ("b", 3), ("c", 2)):
        b.sent(name, 0.0)
        b.answered(name, took * MS, 3 * MS)
    for _ in range(100):
        order = b.order(["a", "b", "c"], 3 * MS)
        assert order[0] != "b"  # the dearest never comes first
        assert order[1:] == sorted(order[1:], key=lambda n: b.cost(n, 3 * MS))
        assert sorted(order) == ["a", "b", "c"]
    assert b.order([], 0.0) == [] and b.order(["a"], 0.0) == ["a"]


def test_replicas_leave_and_memory_must_be_positive():
    b = _balancer()
    b.remove("c")
    assert "c" not in b.loads
    b.answered("c", 1 * MS, 1 * MS)  # a late answer from a replica that left
    assert "c" not in b.loads
    with pytest.raises(ValueError):
        Balancer(memory=0)
