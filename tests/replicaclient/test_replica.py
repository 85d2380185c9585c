from replicaclient.replica import Pending, ReplicaState
from replicaclient.tag import ZERO, Tag


def test_dedup_remembers_outcomes_and_pending_requests():
    s = ReplicaState(remember=2)
    assert s.recall((b"c:1", b"Put")) is None
    pending = s.begin((b"c:1", b"Put"))
    assert s.recall((b"c:1", b"Put")) is pending
    pending.waiters.append("w")
    assert s.finish((b"c:1", b"Put"), {b"ok": b"1"}) == ["w"]
    assert s.recall((b"c:1", b"Put")) == {b"ok": b"1"}
    assert s.duplicates == 2


def test_dedup_table_is_bounded():
    s = ReplicaState(remember=2)
    for i in range(3):
        s.begin((b"c:%d" % i, b"Put"))
    assert s.recall((b"c:0", b"Put")) is None
    assert isinstance(s.recall((b"c:2", b"Put")), Pending)


def test_register_takes_only_newer_tags_and_rolls_back_failed_writes():
    s = ReplicaState()
    assert s.register(b"k").tag == ZERO
    t1, t2 = Tag(1, "a", 1), Tag(2, "a", 2)
    assert s.claim(b"k", t2, b"Put", {b"value": b"2"}) is not None
    assert s.claim(b"k", t1, b"Put", {b"value": b"1"}) is None
    assert s.claim(b"k", t2, b"Put", {b"value": b"x"}) is None
    t3 = Tag(3, "b", 1)
    previous = s.claim(b"k", t3, b"Put", {b"value": b"3"})
    s.rollback(b"k", t3, previous)
    assert s.register(b"k").tag == t2 and s.register(b"k").args == {b"value": b"2"}


def test_tags_order_by_timestamp_then_client_then_sequence_and_round_trip():
    assert Tag(1, "b", 1) < Tag(2, "a", 0)
    assert Tag(1, "a", 9) < Tag(1, "b", 0)
    assert Tag(1, "a", 1) < Tag(1, "a", 2)
    assert Tag.decode(Tag(12, "ab12", 3).encode()) == Tag(12, "ab12", 3)
