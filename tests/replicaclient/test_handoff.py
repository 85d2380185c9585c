"""Hinted handoff and the hybrid logical clock, as pure objects."""

from __future__ import annotations

from replicaclient.handoff import Hint, HintQueue
from replicaclient.tag import HybridClock, Tag, hybrid, physical_ms


def hint(ts: int, size: int = 10) -> Hint:
    return Hint(Tag(ts, "c", ts), b"x" * (size - 1), b"C")


def test_hints_replay_in_tag_order_and_once_per_tag():
    q = HintQueue()
    for ts in (3, 1, 2, 1):
        assert q.add(hint(ts)) == 0
    assert len(q) == 3
    assert [h.tag.ts for h in q.take()] == [1, 2, 3]
    assert len(q) == 0 and q.bytes == 0


def test_past_the_count_bound_every_hint_is_dropped_and_a_full_sync_is_needed():
    q = HintQueue(max_count=2)
    assert q.add(hint(1)) == 0 and q.add(hint(2)) == 0
    assert q.add(hint(3)) == 3
    assert q.overflowed and len(q) == 0
    assert q.add(hint(4)) == 1  # nothing is queued until the sync is done
    q.synced()
    assert q.add(hint(5)) == 0 and len(q) == 1


def test_past_the_byte_bound_every_hint_is_dropped():
    q = HintQueue(max_bytes=25)
    assert q.add(hint(1, 10)) == 0 and q.add(hint(2, 10)) == 0
    assert q.bytes == 20
    assert q.add(hint(3, 10)) == 3
    assert q.overflowed and q.bytes == 0


def test_hybrid_clock_never_goes_backwards_and_moves_past_what_it_sees():
    now = [1000]
    clock = HybridClock(lambda: now[0])
    a = clock.tick()
    assert a == hybrid(1000)
    b = clock.tick()  # same millisecond: the logical counter moves
    assert b == hybrid(1000, 1)
    now[0] = 900  # the wall clock steps back
    c = clock.tick()
    assert c > b and physical_ms(c) == 1000
    clock.observe(hybrid(5000, 7))  # another writer's clock is ahead
    d = clock.tick()
    assert d == hybrid(5000, 8)
    now[0] = 6000
    assert clock.tick() == hybrid(6000)


def test_tags_of_concurrent_writers_give_one_order():
    one, two = HybridClock(lambda: 1000), HybridClock(lambda: 1000)
    t1, t2 = Tag(one.tick(), "aa", 1), Tag(two.tick(), "bb", 1)
    assert t1.ts == t2.ts and t1 < t2  # same time: the client id decides, everywhere
