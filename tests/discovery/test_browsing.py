"""Which types discoveryd browses and until when (discovery/browsing.py), with an injected clock."""

from __future__ import annotations

import pytest

from discovery.browsing import BrowseTable, Need
from discovery.registry import RegistryError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def table(max_types: int = 4, max_watches: int = 2, idle: float = 60.0) -> tuple[BrowseTable, Clock]:
    clock = Clock()
    return BrowseTable(clock, max_types=max_types, max_watches=max_watches, idle=idle), clock


def test_a_looked_up_type_is_browsed_until_idle_after_its_last_lookup() -> None:
    t, clock = table()
    assert t.lookup("_a._tcp", wait=0.5) is Need.NEW
    assert t.lookup("_A._tcp.local.") is Need.BROWSING  # the registry's key: one type
    assert t.next_expiry() == 160.5  # the first lookup's wait, then the idle time
    clock.t = 150.0
    assert t.lookup("_a._tcp") is Need.BROWSING
    clock.t = 160.5
    assert t.expire() == []  # the later lookup keeps it
    assert t.next_expiry() == 210.0
    clock.t = 210.0
    assert t.expire() == ["_a._tcp"]
    assert len(t) == 0 and "_a._tcp" not in t and t.next_expiry() is None
    assert t.lookup("_a._tcp") is Need.NEW  # browsed again when asked again


def test_a_watched_type_stays_until_idle_after_its_last_watcher_leaves() -> None:
    t, clock = table()
    assert t.watch("c1", "_a._tcp") is Need.NEW
    assert t.watch("c2", "_a._tcp") is Need.BROWSING
    assert t.watch("c1", "_a._tcp") is Need.BROWSING  # again: nothing changes
    clock.t = 1000.0
    assert t.expire() == [] and t.next_expiry() is None  # watched: never idle
    t.unwatch("c1", "_a._tcp")
    t.unwatch("c1", "_a._tcp")  # twice is harmless
    assert t.next_expiry() is None  # c2 still watches
    clock.t = 2000.0
    t.connection_lost("c2")
    assert t.next_expiry() == 2060.0
    clock.t = 2059.0
    assert t.expire() == []
    assert t.watch("c3", "_a._tcp") is Need.BROWSING  # a watcher within the idle time keeps it
    clock.t = 5000.0
    assert t.expire() == [] and len(t) == 1
    t.unwatch("c3", "_A._tcp")
    clock.t = 5060.0
    assert t.expire() == ["_a._tcp"]
    assert t.watches("c3") == 0


def test_a_lookup_past_the_cap_is_not_browsed_and_nothing_is_evicted() -> None:
    t, clock = table(max_types=2)
    assert [t.lookup(x) for x in ("_a._tcp", "_b._tcp", "_c._tcp")] == [Need.NEW, Need.NEW, Need.FULL]
    assert len(t) == 2 and "_c._tcp" not in t
    clock.t = 101.0
    assert t.lookup("_a._tcp") is Need.BROWSING  # a browsed type is still served
    clock.t = 159.0
    assert t.lookup("_c._tcp") is Need.FULL  # repeated: still no eviction
    clock.t = 160.0
    assert t.expire() == ["_b._tcp"]  # _a's second lookup keeps it a second longer
    assert t.lookup("_c._tcp") is Need.NEW


def test_watches_are_capped_per_connection_and_by_the_browse_cap() -> None:
    t, clock = table(max_types=3, max_watches=2)
    t.watch("c1", "_a._tcp")
    t.watch("c1", "_b._tcp")
    with pytest.raises(RegistryError) as e:
        t.watch("c1", "_c._tcp")
    assert e.value.code == "too-many-watches" and "watches-per-connection = 2" in e.value.message
    assert "_c._tcp" not in t and t.watches("c1") == 2  # a refusal changes nothing
    assert t.watch("c1", "_a._tcp") is Need.BROWSING  # one it watches already is no new watch
    t.watch("c2", "_c._tcp")
    with pytest.raises(RegistryError) as e:
        t.watch("c2", "_d._tcp")
    assert e.value.code == "too-many-browsed-types" and "browsed-types = 3" in e.value.message
    assert t.watches("c2") == 1
    assert t.watch("c2", "_a._tcp") is Need.BROWSING  # a browsed type may still be watched
    t.unwatch("c1", "_b._tcp")
    assert t.watch("c1", "_c._tcp") is Need.BROWSING  # room on c1 again
    with pytest.raises(RegistryError):
        t.watch("c3", "_d._tcp")  # _b is idle, not gone: it still takes its slot
    clock.t += 60.0
    assert t.expire() == ["_b._tcp"]
    assert t.watch("c3", "_d._tcp") is Need.NEW


def test_what_a_lost_connection_held_is_released() -> None:
    t, clock = table(max_types=10, max_watches=10, idle=1.0)
    for i in range(5):
        t.watch("c1", f"_t{i}._tcp")
    t.connection_lost("c1")
    t.connection_lost("c1")
    assert t.watches("c1") == 0
    clock.t += 1.0
    assert sorted(t.expire()) == [f"_t{i}._tcp" for i in range(5)]
    assert len(t) == 0 and t.next_expiry() is None
