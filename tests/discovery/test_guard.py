"""The LAN rules of discovery/guard.py with plain values and an injected clock."""

from __future__ import annotations

import socket

from discovery.guard import (
    DEFAULT_MAX_PER_TYPE,
    MAX_TTL,
    MAX_TYPES,
    Decision,
    HostName,
    InstanceCap,
    SentPackets,
    Throttle,
    alternative_host_name,
    clamp_ttl,
    host_decision,
    record_decision,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_ttl_is_clamped_to_75_minutes() -> None:
    assert MAX_TTL == 4500
    assert clamp_ttl(2**32 - 1) == 4500
    assert clamp_ttl(120) == 120
    assert clamp_ttl(0) == 0


def test_alternative_host_names_count_up_within_one_label() -> None:
    assert alternative_host_name("raspberrypi") == "raspberrypi-2"
    assert alternative_host_name("raspberrypi-2") == "raspberrypi-3"
    assert alternative_host_name("raspberrypi-9") == "raspberrypi-10"
    assert alternative_host_name("web-01") == "web-01-2"  # not a counter of ours
    assert alternative_host_name("-3") == "-3-2"
    long = "x" * 63
    assert alternative_host_name(long) == "x" * 61 + "-2"
    assert len(alternative_host_name("é" * 31).encode()) <= 63


def test_host_conflict_is_settled_alike_on_both_sides() -> None:
    a, b = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2")
    assert host_decision([a], a, probing=False) is Decision.NONE  # our own address
    assert host_decision([a], b, probing=True) is Decision.RENAME  # the name was not ours yet
    # established on both sides: the later address keeps the name, the other renames
    assert host_decision([b], a, probing=False) is Decision.DEFEND
    assert host_decision([a], b, probing=False) is Decision.RENAME
    assert host_decision([], b, probing=False) is Decision.NONE


def test_record_conflicts_on_owned_names() -> None:
    ours = ("h0.local.", 6010)
    assert record_decision(ours, ours, goodbye=False, established=True) is Decision.NONE
    assert record_decision(ours, ("evil.local.", 9), goodbye=False, established=True) is Decision.DEFEND
    assert record_decision(ours, ("evil.local.", 9), goodbye=False, established=False) is Decision.LOSE
    # someone else's goodbye for our exact record: announce it again
    assert record_decision(ours, ours, goodbye=True, established=True) is Decision.DEFEND
    assert record_decision(ours, ("evil.local.", 9), goodbye=True, established=True) is Decision.NONE
    assert record_decision(ours, ours, goodbye=True, established=False) is Decision.NONE


def test_sent_packets_are_recognised_for_a_while_only() -> None:
    clock = Clock()
    sent = SentPackets(clock, keep=5.0, limit=3)
    sent.sent(b"one")
    assert sent.is_own(b"one") and not sent.is_own(b"two")
    clock.t += 5.0
    assert not sent.is_own(b"one")
    for p in (b"a", b"b", b"c", b"d"):
        sent.sent(p)
    assert not sent.is_own(b"a") and all(sent.is_own(p) for p in (b"b", b"c", b"d"))


def test_throttle_lets_one_through_per_period_and_counts_the_rest() -> None:
    clock = Clock()
    th = Throttle(clock, 60.0)
    assert th.allow("t") == 1
    assert th.allow("t") is None and th.allow("t") is None
    assert th.allow("u") == 1
    clock.t += 60
    assert th.allow("t") == 3


def test_throttle_state_is_bounded() -> None:
    clock = Clock()
    th = Throttle(clock, 60.0, limit=2)
    assert th.allow(1) == 1 and th.allow(2) == 1
    assert th.allow(3) is None  # full of live keys: held back
    clock.t += 60
    assert th.allow(3) == 2


def test_instance_cap_per_type_reported_once_per_period() -> None:
    clock = Clock()
    cap = InstanceCap(clock, limit=3, report_every=600)
    assert (DEFAULT_MAX_PER_TYPE, MAX_TYPES) == (1000, 1000)
    assert [cap.admit("_a._tcp", f"i{i}", 9000) for i in range(5)] == [True, True, True, False, False]
    assert cap.admit("_a._tcp", "i0", 9000)  # a refresh of an admitted one
    assert cap.admit("_b._tcp", "x", 9000)  # other types have their own quota
    assert cap.reports == [("_a._tcp", 1)]
    cap.reports.clear()
    for i in range(100):
        assert not cap.admit("_a._tcp", f"j{i}", 9000)
    assert cap.reports == []
    cap.remove("_a._tcp", "i1")
    assert cap.admit("_a._tcp", "j0", 9000) and not cap.admit("_a._tcp", "j1", 9000)
    clock.t += 600
    assert not cap.admit("_a._tcp", "j2", 9000)
    assert cap.reports == [("_a._tcp", 103)]  # i4, j0..j99 and j1 held back, and j2


def test_instance_cap_forgets_expired_instances() -> None:
    clock = Clock()
    cap = InstanceCap(clock, limit=2)
    assert cap.admit("_a._tcp", "old", 10) and cap.admit("_a._tcp", "keep", 100)
    assert not cap.admit("_a._tcp", "new", 10)
    clock.t += 11
    assert cap.admit("_a._tcp", "new", 10)
    assert not cap.admitted("_a._tcp", "old") and cap.count("_a._tcp") == 2
    cap.remove("_a._tcp", "new")
    cap.remove("_a._tcp", "keep")
    assert cap.count("_a._tcp") == 0


def test_renames_are_rate_limited_as_rfc_6762_8_1_says() -> None:
    clock = Clock()
    host = HostName("pi", clock)
    names = []
    for _ in range(15):
        assert host.may_rename()
        names.append(host.rename())
        clock.t += 0.1
    assert names[:2] == ["pi-2", "pi-3"] and host.current == "pi-16" and host.configured == "pi"
    assert not host.may_rename()
    clock.t += 5
    assert host.may_rename()


def test_instance_cap_bounds_the_number_of_types_and_forgets_expired_ones() -> None:
    clock = Clock()
    cap = InstanceCap(clock, limit=10, max_types=2)
    assert cap.admit("_a._tcp", "x", 30) and cap.admit("_b._tcp", "x", 300)
    assert not cap.admit("_c._tcp", "x", 30) and cap.reports == [("*", 1)]
    assert cap.admit("_a._tcp", "y", 30)  # a known type takes more
    clock.t += 61  # the sweep forgets _a's expired instances, and with them the type
    assert cap.admit("_c._tcp", "x", 30)
    assert (cap.types(), cap.count("_a._tcp"), cap.count("_b._tcp")) == (2, 0, 1)
