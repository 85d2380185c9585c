"""The mDNS send pacer (RFC 6762 §6 per record, a budget over all), on a fake clock."""

from __future__ import annotations

from discovery.pacing import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_new_name_goes_at_once_then_once_a_second():
    clock = Clock()
    p = Pacer(clock)
    assert p.wait_for("a") == 0 and p.reserve() == 0
    p.sent("a")
    clock.now += 0.25
    assert p.wait_for("a") == 0.75
    assert p.wait_for("b") == 0  # other names have their own slots
    clock.now += 0.75
    assert p.wait_for("a") == 0


def test_due_counts_what_it_lets_through():
    clock = Clock()
    p = Pacer(clock)
    assert p.due("addresses") and not p.due("addresses")
    clock.now += 1.0
    assert p.due("addresses")


def test_the_budget_lets_a_burst_through_then_paces_the_rest():
    clock = Clock()
    p = Pacer(clock, rate=10.0, burst=5)
    waits = [round(p.reserve(), 6) for _ in range(8)]
    assert waits == [0, 0, 0, 0, 0, 0.1, 0.2, 0.3]
    clock.now += 10  # idle: the whole burst is back
    assert [round(p.reserve(), 6) for _ in range(6)] == [0, 0, 0, 0, 0, 0.1]


def test_keys_are_forgotten_once_their_gap_is_over():
    clock = Clock()
    p = Pacer(clock, rate=1e9, burst=10**9)
    for i in range(1025):
        p.sent(f"k{i}")
        clock.now += 0.01
    assert len(p._last) < 200  # the ones older than a second went when the table grew
    assert p.wait_for("k1024") > 0
