"""The policies as pure state machines: scripted replies, an injected clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from replicaclient.declare import Semantics
from replicaclient.errors import DeadlineExceeded, NoQuorum, NoReplicas
from replicaclient.policy import (
    CallContext,
    Fail,
    First,
    Quorum,
    Reply,
    Send,
    Succeed,
    Vote,
    as_policy,
)
from replicaclient.tag import ZERO, Tag

READ = Semantics("read", True, "key")
WRITE = Semantics("write", True, "key")


def ctx(clock: Clock, replicas: list[str], semantics: Semantics = READ, *,
        hedge_delay: float | None = 0.01, budget: list[bool] | None = None,
        timeout: float = 1.0, probes: tuple[str, ...] = (), members: int | None = None,
        ejected: tuple[str, ...] = ()) -> CallContext:
    tokens = list(budget) if budget is not None else None

    def spend() -> bool:
        return True if tokens is None else (tokens.pop(0) if tokens else False)

    return CallContext(
        command="Get", semantics=semantics, candidates=replicas,
        members=members if members is not None else len(replicas) + len(ejected) + len(probes),
        now=clock.seconds(), deadline=clock.seconds() + timeout, probes=probes,
        ejected=ejected, hedge_delay=hedge_delay, spend=spend, client="c1", seq=7)


def ok(value: str, tag: Tag | None = None, record: object = None) -> Reply:
    return Reply(("value", value), {"value": value}, value, tag, record)


def advance(clock: Clock, machine, seconds: float):
    clock.advance(seconds)
    return machine.wake(clock.seconds())


# --- first ----------------------------------------------------------------------------


def test_first_sends_to_the_best_replica_only():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b", "c"]))
    assert m.start() == [Send("a", "call", "primary")]
    assert m.answered("a", "call", ok("1"), clock.seconds()) == [Succeed({"value": "1"}, "a", "primary")]


def test_first_hedges_after_the_delay_and_first_answer_wins():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b", "c"], hedge_delay=0.05))
    m.start()
    assert m.next_wake() == pytest.approx(0.05)
    assert advance(clock, m, 0.049) == []
    assert advance(clock, m, 0.001) == [Send("b", "call", "hedge")]
    assert m.answered("b", "call", ok("1"), clock.seconds()) == [
        Succeed({"value": "1"}, "b", "hedge")]
    # the slow primary's late answer is ignored
    assert m.answered("a", "call", ok("1"), clock.seconds()) == []


def test_first_hedges_at_most_max_hedges_times():
    clock = Clock()
    m = First(max_hedges=1).machine(ctx(clock, ["a", "b", "c"], hedge_delay=0.05))
    m.start()
    assert advance(clock, m, 0.05) == [Send("b", "call", "hedge")]
    assert advance(clock, m, 0.5) == []


def test_first_never_hedges_or_retries_a_non_idempotent_command():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], Semantics("read", False), hedge_delay=0.01))
    m.start()
    assert advance(clock, m, 0.5) == []
    (fail,) = m.failed("a", "call", ConnectionError("gone"), clock.seconds())
    assert isinstance(fail, Fail) and isinstance(fail.error, ConnectionError)


def test_first_hedge_needs_a_budget_token():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], hedge_delay=0.01, budget=[False]))
    m.start()
    assert advance(clock, m, 0.01) == []


def test_first_retries_a_failure_on_the_next_replica():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b", "c"], hedge_delay=None))
    m.start()
    assert m.failed("a", "call", ConnectionError("x"), 0) == [Send("b", "call", "retry")]
    assert m.failed("b", "call", ConnectionError("y"), 0) == [Send("c", "call", "retry")]
    (fail,) = m.failed("c", "call", ConnectionRefusedError("z"), 0)
    assert isinstance(fail.error, ConnectionRefusedError)  # the last error, as one server


def test_first_without_budget_fails_with_the_replica_error():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], hedge_delay=None, budget=[]))
    m.start()
    (fail,) = m.failed("a", "call", ConnectionError("x"), 0)
    assert isinstance(fail, Fail) and isinstance(fail.error, ConnectionError)


def test_first_waits_for_the_other_copy_when_one_fails():
    clock = Clock()
    m = First(retries=0).machine(ctx(clock, ["a", "b"], hedge_delay=0.01))
    m.start()
    advance(clock, m, 0.01)
    assert m.failed("a", "call", ConnectionError("x"), clock.seconds()) == []
    assert m.answered("b", "call", ok("2"), clock.seconds())[0].payload == {"value": "2"}


def test_first_deadline_covers_every_attempt():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], hedge_delay=0.1, timeout=0.3))
    m.start()
    assert advance(clock, m, 0.1) == [Send("b", "call", "hedge")]
    assert m.next_wake() == pytest.approx(0.3)
    (fail,) = advance(clock, m, 0.2)
    assert isinstance(fail.error, DeadlineExceeded)
    assert m.answered("a", "call", ok("1"), clock.seconds()) == []


def test_first_with_no_replica_fails_at_once():
    clock = Clock()
    (fail,) = First().machine(ctx(clock, [])).start()
    assert isinstance(fail.error, NoReplicas)


def test_first_probes_a_replica_back_from_ejection_alongside_the_primary():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], probes=("c",)))
    assert m.start() == [Send("a", "call", "primary"), Send("c", "call", "probe")]
    # a failed probe does not fail the call nor spend a retry
    assert m.failed("c", "call", ConnectionError(), 0) == []
    assert m.answered("a", "call", ok("1"), 0)[0].replica == "a"


def test_a_declared_error_is_an_answer_for_first():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"]))
    m.start()
    error = KeyError("nope")
    (done,) = m.answered("a", "call", Reply(("error", b"KEY", "nope"), error), 0)
    assert done == Succeed(error, "a", "primary")


# --- vote ------------------------------------------------------------------------------


def test_vote_outvotes_a_liar_two_to_one():
    clock = Clock()
    m = Vote().machine(ctx(clock, ["a", "b", "c"]))
    assert m.start() == [Send(r, "call", "fanout") for r in "abc"]
    assert m.answered("c", "call", ok("lie"), 0) == []
    assert m.answered("a", "call", ok("1"), 0) == []
    assert m.answered("b", "call", ok("1"), 0) == [Succeed({"value": "1"}, "b", "fanout")]


def test_vote_one_to_one_is_no_quorum_and_says_what_each_replica_said():
    clock = Clock()
    m = Vote().machine(ctx(clock, ["a", "b", "c"]))
    m.start()
    m.answered("a", "call", ok("1"), 0)
    m.failed("b", "call", ConnectionRefusedError("refused"), 0)
    (fail,) = m.answered("c", "call", ok("lie"), 0)
    assert isinstance(fail.error, NoQuorum)
    assert fail.error.threshold == 2
    assert fail.error.replies["a"] == "1"
    assert fail.error.replies["c"] == "lie"
    assert "ConnectionRefusedError" in fail.error.replies["b"]


def test_vote_fails_as_soon_as_no_answer_can_win():
    clock = Clock()
    m = Vote().machine(ctx(clock, list("abcde")))  # threshold 3
    m.start()
    m.answered("a", "call", ok("1"), 0)
    m.answered("b", "call", ok("2"), 0)
    m.failed("c", "call", ConnectionError(), 0)
    # best is 1 with 2 outstanding: 1 + 2 >= 3, still possible
    (fail,) = m.answered("d", "call", ok("3"), 0)
    assert isinstance(fail.error, NoQuorum)
    assert fail.error.replies["e"] == "no answer yet"


def test_vote_never_returns_a_minority_answer_even_at_the_deadline():
    clock = Clock()
    m = Vote().machine(ctx(clock, ["a", "b", "c"], timeout=1.0))
    m.start()
    m.answered("a", "call", ok("1"), 0)
    (fail,) = advance(clock, m, 1.0)
    assert isinstance(fail.error, NoQuorum) and "deadline" in str(fail.error)


def test_vote_threshold_counts_ejected_members():
    clock = Clock()
    m = Vote().machine(ctx(clock, ["a"], ejected=("b", "c")))
    (fail,) = m.start()
    assert isinstance(fail.error, NoQuorum)
    assert fail.error.replies["b"] == "ejected, not asked"


@pytest.mark.parametrize("n,expected", [(1, 1), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_vote_majority_threshold(n, expected):
    assert Vote().threshold_for(n) == expected


@pytest.mark.parametrize("n,expected", [(4, 3), (7, 5), (10, 7)])
def test_vote_byzantine_threshold_is_2f_plus_1_of_3f_plus_1(n, expected):
    assert Vote(byzantine=True).threshold_for(n) == expected


def test_vote_counts_identical_declared_errors():
    clock = Clock()
    m = Vote().machine(ctx(clock, ["a", "b", "c"]))
    m.start()
    error = Reply(("error", b"KEY", "k"), KeyError("k"))
    m.answered("a", "call", error, 0)
    (done,) = m.answered("b", "call", error, 0)
    assert isinstance(done, Succeed) and isinstance(done.payload, KeyError)


# --- quorum (ABD) ------------------------------------------------------------------------


def test_quorum_write_queries_tags_then_stores_above_the_highest():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], WRITE))
    assert m.start() == [Send(r, "query", "fanout") for r in "abc"]
    assert m.answered("a", "query", Reply(("tag",), None, "", Tag(3, "zz", 1)), 0) == []
    sends = m.answered("b", "query", Reply(("tag",), None, "", Tag(5, "aa", 9)), 0)
    mine = Tag(6, "c1", 7)
    assert sends == [Send(r, "store", "fanout", mine) for r in "abc"]
    # a late tag from the query stage is ignored
    assert m.answered("c", "query", Reply(("tag",), None, "", Tag(9, "x", 1)), 0) == []
    assert m.answered("a", "store", Reply(("ack",), {}), 0) == []
    assert m.answered("c", "store", Reply(("ack",), {}), 0) == [Succeed({}, "a", "fanout")]


def test_quorum_read_skips_writeback_when_a_majority_agrees():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], READ))
    assert m.start() == [Send(r, "read", "fanout") for r in "abc"]
    t = Tag(2, "c9", 1)
    m.answered("a", "read", ok("x", t, ("Put", {})), 0)
    (done,) = m.answered("c", "read", ok("x", t, ("Put", {})), 0)
    assert done == Succeed({"value": "x"}, "a", "fanout")


def test_quorum_read_writes_the_highest_tag_back_before_returning():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], READ))
    m.start()
    old, new = Tag(1, "c9", 1), Tag(2, "c8", 4)
    record = (b"Put", {b"key": b"k", b"value": b"new"})
    m.answered("a", "read", ok("old", old, (b"Put", {})), 0)
    sends = m.answered("b", "read", ok("new", new, record), 0)
    assert sends == [Send(r, "writeback", "fanout", new, record) for r in "abc"]
    assert m.answered("c", "writeback", Reply(("ack",), {}), 0) == []
    assert m.answered("a", "writeback", Reply(("ack",), {}), 0) == [
        Succeed({"value": "new"}, "b", "fanout")]


def test_quorum_initial_state_needs_no_writeback():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], READ))
    m.start()
    m.answered("a", "read", ok("", ZERO), 0)
    (done,) = m.answered("b", "read", ok("", ZERO), 0)
    assert isinstance(done, Succeed)


def test_quorum_tolerates_a_minority_of_crashes_and_fails_on_a_majority():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], WRITE))
    m.start()
    assert m.failed("a", "query", ConnectionError(), 0) == []
    (fail,) = m.failed("b", "query", ConnectionError(), 0)
    assert isinstance(fail.error, NoQuorum) and fail.error.threshold == 2


def test_quorum_refuses_a_reply_without_a_tag():
    clock = Clock()
    m = Quorum().machine(ctx(clock, ["a", "b", "c"], READ))
    m.start()
    m.answered("a", "read", ok("x"), 0)
    (fail,) = m.answered("b", "read", ok("x"), 0)
    assert isinstance(fail.error, NoQuorum) and "without a tag" in str(fail.error)


def test_quorum_needs_a_majority_of_all_members_not_of_the_reachable():
    clock = Clock()
    (fail,) = Quorum().machine(ctx(clock, ["a"], WRITE, members=3)).start()
    assert isinstance(fail.error, NoQuorum)


def test_quorum_needs_a_register_declaration():
    with pytest.raises(ValueError, match="register"):
        Quorum().machine(ctx(Clock(), ["a"], Semantics("read", True, None)))


def test_policy_names():
    assert isinstance(as_policy("first"), First)
    assert isinstance(as_policy("vote"), Vote)
    assert isinstance(as_policy("quorum"), Quorum)
    with pytest.raises(ValueError):
        as_policy("fastest")


# --- first: writes to every replica, read repair ------------------------------------------


def test_first_sends_a_write_to_every_replica_and_the_first_ack_wins():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b", "c"], WRITE, probes=("d",)))
    assert m.start() == [Send("a", "call", "fanout"), Send("b", "call", "fanout"),
                         Send("c", "call", "fanout"), Send("d", "call", "probe")]
    assert m.failed("b", "call", ConnectionError("x"), 0) == []
    assert m.answered("c", "call", ok("ack"), 0) == [Succeed({"value": "ack"}, "c", "fanout")]
    assert m.answered("a", "call", ok("ack"), 0) == []


def test_first_write_fails_with_the_last_error_when_no_replica_acknowledges():
    clock = Clock()
    m = First().machine(ctx(clock, ["a", "b"], WRITE))
    m.start()
    assert m.failed("a", "call", ConnectionError("x"), 0) == []
    (fail,) = m.failed("b", "call", ConnectionRefusedError("z"), 0)
    assert isinstance(fail.error, ConnectionRefusedError)


@pytest.mark.parametrize(("acks", "need"), [(2, 2), ("majority", 3), ("all", 4)])
def test_first_write_acks_can_ask_for_more_acknowledgements(acks, need):
    clock = Clock()
    m = First(write_acks=acks).machine(ctx(clock, list("abcd"), WRITE))
    m.start()
    for r in "abcd"[:need - 1]:
        assert m.answered(r, "call", ok("ack"), 0) == []
    (done,) = m.answered("abcd"[need - 1], "call", ok("ack"), 0)
    assert isinstance(done, Succeed)


def test_first_write_all_fails_as_soon_as_one_replica_cannot_acknowledge():
    clock = Clock()
    m = First(write_acks="all").machine(ctx(clock, ["a", "b", "c"], WRITE))
    m.start()
    m.answered("a", "call", ok("ack"), 0)
    (fail,) = m.failed("b", "call", ConnectionError("x"), 0)
    assert isinstance(fail.error, NoQuorum) and fail.error.threshold == 3


def test_first_write_acks_must_make_sense():
    for bad in (0, "most"):
        with pytest.raises(ValueError):
            First(write_acks=bad)
    with pytest.raises(ValueError):
        First(read_repair=1.5)


def test_read_repair_answers_with_the_newest_and_writes_it_back_to_the_stale():
    clock = Clock()
    c = ctx(clock, ["a", "b", "c"])
    c.repair = True
    m = First(read_repair=1.0).machine(c)
    assert m.start() == [Send(r, "read", "fanout") for r in "abc"]
    old, new = Tag(1, "x", 1), Tag(2, "x", 2)
    record = (b"Put", {b"key": b"k", b"value": b"2"})
    assert m.answered("a", "read", ok("1", old, (b"Put", {})), 0) == []
    assert m.failed("b", "read", ConnectionError("down"), 0) == []
    actions = m.answered("c", "read", ok("2", new, record), 0)
    assert actions == [Send("a", "writeback", "repair", new, record),
                       Succeed({"value": "2"}, "c", "fanout")]


def test_read_repair_with_every_replica_up_to_date_writes_nothing_back():
    clock = Clock()
    c = ctx(clock, ["a", "b"])
    c.repair = True
    m = First(read_repair=1.0).machine(c)
    m.start()
    tag = Tag(1, "x", 1)
    m.answered("a", "read", ok("1", tag, (b"Put", {})), 0)
    assert m.answered("b", "read", ok("1", tag, (b"Put", {})), 0) == [
        Succeed({"value": "1"}, "a", "fanout")]
