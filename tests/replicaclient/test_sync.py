"""Full sync, pure: the page format and what a sync copies from which source."""

from __future__ import annotations

import pytest

from replicaclient.replica import ReplicaState
from replicaclient.sync import BadPage, Entry, Page, encode_page, parse_page, select
from replicaclient.tag import Tag, hybrid

NOW = 1_000_000


def e(reg: str, ts: int, value: str, client: str = "c") -> Entry:
    return Entry(reg.encode(), Tag(hybrid(ts), client, 1), b"Put",
                 ((b"key", reg.encode()), (b"value", value.encode())))


def pick(pages, after=None, threshold=None):
    return select(pages, after=after, now_ms=NOW, future_ms=60_000, threshold=threshold)


def test_a_page_round_trips_through_its_box_even_past_amps_value_limit():
    big = Entry(b"big", Tag(5, "c", 1), b"Put", ((b"value", b"v" * 200_000),))
    entries = [e("a", 1, "1"), big, e("c", 3, "3")]
    box = encode_page(entries, more=True)
    assert all(len(v) <= 65535 for v in box.values())
    assert parse_page(box, limit=10) == Page(entries, True)


@pytest.mark.parametrize("box", [
    {}, {b"_rc_n": b"x", b"_rc_more": b"0"}, {b"_rc_n": b"1", b"_rc_more": b"0"},
    {b"_rc_n": b"1", b"_rc_more": b"0", b"_rc_s0": b"\x00\x00\x00\x09ab"},
    {b"_rc_n": b"1", b"_rc_more": b"0",
     b"_rc_s0": b"\x00\x00\x00\x14\x00\x00\x00\x01a\x00\x00\x00\x03bad\x00\x00\x00\x01P"},
    {**encode_page([e("a", 1, "1")], False), b"_rc_n": b"2"},
    {b"_rc_n": b"99", b"_rc_more": b"0"},
])
def test_garbage_is_a_bad_page(box):
    with pytest.raises(BadPage):
        parse_page(box, limit=10)


def test_the_newest_tag_of_each_register_wins():
    pages = {"r1": Page([e("a", 1, "old"), e("b", 5, "new")], False),
             "r2": Page([e("a", 2, "new"), e("b", 4, "old")], False)}
    got = pick(pages)
    assert got.entries == [e("a", 2, "new"), e("b", 5, "new")]
    assert got.rejected == {} and got.upto is None


def test_a_page_stops_at_the_last_register_of_a_source_that_has_more():
    pages = {"r1": Page([e("a", 1, "1"), e("b", 1, "1")], True),
             "r2": Page([e("a", 1, "1"), e("b", 1, "1"), e("c", 1, "1")], False)}
    got = pick(pages)
    assert [x.register for x in got.entries] == [b"a", b"b"] and got.upto == b"b"
    nxt = pick({"r1": Page([e("c", 2, "2")], False), "r2": Page([e("c", 1, "1")], False)},
               after=b"b")
    assert nxt.entries == [e("c", 2, "2")] and nxt.upto is None


def test_under_vote_a_register_is_copied_only_when_a_majority_agree():
    honest = [e("a", 1, "1"), e("b", 1, "1")]
    lies = [e("a", 9, "forged"), e("b", 9, "forged")]
    pages = {"h1": Page(honest, False), "h2": Page(honest, False), "liar": Page(lies, False)}
    assert pick(pages, threshold=2).entries == honest  # the liar's newer tags do not win
    assert pick(pages).entries == lies  # (what newest-wins alone would have copied)
    split = {"h1": Page(honest, False), "liar": Page(lies, False)}
    got = pick(split, threshold=2)
    assert got.entries == [] and got.undecided == [b"a", b"b"]


@pytest.mark.parametrize(("entries", "why"), [
    ([e("x", NOW + 120_000, "x")], "in the future"),
    ([e("a", 1, "x")], "not asked for"),
    ([e("m", 1, "x"), e("m", 1, "x")], "out of order or twice"),
])
def test_a_source_that_sends_what_it_should_not_is_rejected_and_not_used(entries, why):
    pages = {"good": Page([e("n", 1, "ok")], False), "bad": Page(entries, False)}
    got = pick(pages, after=b"b")
    assert why in got.rejected["bad"] and "good" not in got.rejected
    assert got.entries == [e("n", 1, "ok")]


def test_a_source_whose_answer_failed_is_rejected():
    got = pick({"good": Page([e("a", 1, "1")], False), "bad": BadPage("not a sync page")})
    assert got.rejected == {"bad": "BadPage: not a sync page"}
    assert got.entries == [e("a", 1, "1")]


def test_replica_state_pages_registers_in_name_order_newer_tag_wins():
    s = ReplicaState()
    for i in range(25):
        s.claim(b"k%02d" % i, Tag(i + 1, "c", i), b"Put", {b"value": b"%d" % i})
    assert s.claim(b"k03", Tag(1, "c", 0), b"Put", {b"value": b"older"}) is None
    first, more = s.page(None, 10)
    assert more and [x.register for x in first] == [b"k%02d" % i for i in range(10)]
    rest, more = s.page(first[-1].register, 100)
    assert not more and len(rest) == 15
    assert first[3].args == ((b"value", b"3"),)
    s.claim(b"a", Tag(99, "c", 0), b"Put", {})
    assert s.page(None, 1)[0][0].register == b"a"
    assert ReplicaState().incarnation != ReplicaState().incarnation


def test_when_a_replica_that_is_back_needs_a_full_sync():
    from replicaclient.sync import sync_reason

    assert sync_reason("a", "a") is None  # the same process: its hints are enough
    assert sync_reason(None, "a") is None  # first met: nothing known to compare
    assert "restarted" in sync_reason("a", "b")
    assert sync_reason(None, "a", joined=True) == "joined"
    assert "dropped" in sync_reason("a", "a", hints_dropped=True)
    # a sync that did not complete is still due, though the incarnation is now known
    assert "restarted" in sync_reason("b", "b", pending=sync_reason("a", "b"))
    assert sync_reason("a", None, joined=True) is None  # no helper: cannot be synced
