"""The wait analysis (observe/waits.py) on synthetic decoded messages: what counts as a round
trip the client waited for, the first map, who answered, the bounds, and the Perfetto JSON
round trip."""

from __future__ import annotations

import json

import pytest

from xproxy.observe.waits import (
    MAX_MARKS,
    MAX_NAMES,
    Answered,
    NotWaits,
    WaitAnalysis,
    from_perfetto,
)
from xproxy.x11.decode.decoder import Decoded

BASE, MASK = 0x200000, 0x1FFFFF
ROOT_WINDOW = 0x50D


def setup(a: WaitAnalysis, client: int, t: float, took: float) -> None:
    a.feed(client, Decoded("setup", 0, "Setup", {}, 12), t)
    a.feed(client, Decoded("setup-reply", 0, "Setup",
                           {"status": 1, "resource_id_base": BASE, "resource_id_mask": MASK},
                           100), t + took)


def req(a: WaitAnalysis, client: int, seq: int, name: str, t: float, **fields: object) -> None:
    a.feed(client, Decoded("request", seq, name, dict(fields), 8), t)


def reply(a: WaitAnalysis, client: int, seq: int, name: str, t: float,
          latency: float | None = 0.0) -> None:
    a.feed(client, Decoded("reply", seq, name, {}, 32, latency), t)


def test_a_request_answered_before_the_client_spoke_again_is_a_wait() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "InternAtom", 1.0)
    reply(a, 1, 1, "InternAtom", 1.25)
    req(a, 1, 2, "GetProperty", 1.3)
    reply(a, 1, 2, "GetProperty", 1.4)
    assert [(w.seq, w.name) for w in a.waits] == [(0, "Setup"), (1, "InternAtom"),
                                                  (2, "GetProperty")]
    w = a.waits[1]
    assert (w.start, w.waited, w.answered, w.error) == (1.0, 0.25, Answered.NO_LINK, False)


def test_a_pipelined_request_is_no_wait_and_the_last_one_is() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "InternAtom", 1.0)
    req(a, 1, 2, "InternAtom", 1.0)
    req(a, 1, 3, "ChangeProperty", 1.0)  # sent after: the client was not blocked on 1 or 2
    reply(a, 1, 1, "InternAtom", 1.1)
    reply(a, 1, 2, "InternAtom", 1.1)
    req(a, 1, 4, "GetInputFocus", 1.2)
    reply(a, 1, 4, "GetInputFocus", 1.3)
    assert [w.seq for w in a.waits] == [0, 4]


def test_clients_are_apart_and_events_do_not_end_a_wait() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    setup(a, 2, 0.0, 0.001)
    req(a, 1, 1, "GetGeometry", 1.0)
    req(a, 2, 1, "GetGeometry", 1.0)  # another client speaking does not end client 1's wait
    a.feed(1, Decoded("event", 0, "Expose", {}, 32), 1.05)
    reply(a, 1, 1, "GetGeometry", 1.1)
    assert [(w.client, w.seq) for w in a.waits if w.seq] == [(1, 1)]


def test_an_error_ends_a_wait_only_for_a_request_that_expected_a_reply() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "GetProperty", 1.0)
    a.feed(1, Decoded("error", 1, "BadWindow", {}, 32), 1.1, awaited=True)
    req(a, 1, 2, "ChangeWindowAttributes", 1.2)
    a.feed(1, Decoded("error", 2, "BadWindow", {}, 32), 1.3, awaited=False)
    assert [(w.seq, w.error) for w in a.waits if w.seq] == [(1, True)]


def test_later_replies_to_one_request_are_one_wait() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "ListFontsWithInfo", 1.0)
    reply(a, 1, 1, "ListFontsWithInfo", 1.1, latency=0.1)
    reply(a, 1, 1, "ListFontsWithInfo", 1.2, latency=None)
    assert [w.seq for w in a.waits] == [0, 1]


def test_first_map_is_the_first_mapwindow_of_a_top_level_window() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "CreateWindow", 1.0, wid=BASE + 1, parent=ROOT_WINDOW)
    req(a, 1, 2, "CreateWindow", 1.0, wid=BASE + 2, parent=BASE + 1)
    req(a, 1, 3, "MapWindow", 1.1, window=BASE + 2)  # a child: not yet
    req(a, 1, 4, "InternAtom", 1.2)
    reply(a, 1, 4, "InternAtom", 1.3)
    assert a.first_map is None
    req(a, 1, 5, "MapWindow", 1.4, window=BASE + 1)
    req(a, 1, 6, "GetProperty", 1.5)
    reply(a, 1, 6, "GetProperty", 1.6)
    assert a.first_map == 1.4
    assert [w.seq for w in a.before_map()] == [0, 4]
    s = a.summary()
    assert (s["waits"], s["before_map"], s["first_map"]) == (3, 2, 1.4)
    assert s["by_name"] == {"Setup": 1, "InternAtom": 1}


def test_through_a_link_the_agents_marks_say_who_answered_not_the_time() -> None:
    """The link agent marks what it answered; a wait without a mark crossed the link,
    however fast it came back, and a marked one is the link's however slow."""
    a = WaitAnalysis(link=True)
    a.mark(1, 1)  # (marked before the client's first message reached the analysis)
    setup(a, 1, 0.0, 0.040)  # the setup crosses the link: 40 ms
    req(a, 1, 1, "InternAtom", 1.0)
    reply(a, 1, 1, "InternAtom", 1.030)  # slower than half the setup: the agent's all the same
    req(a, 1, 2, "GetProperty", 1.1)
    reply(a, 1, 2, "GetProperty", 1.101)  # fast, but unmarked: the server's
    a.mark(1, 3, behind=2)
    req(a, 1, 3, "QueryExtension", 1.2)
    reply(a, 1, 3, "QueryExtension", 1.242)
    assert [w.answered for w in a.waits] == [Answered.SERVER, Answered.LINK, Answered.SERVER,
                                             Answered.HELD]
    assert [w.behind for w in a.waits] == ["", "", "", "GetProperty"]
    assert a.summary()["answered"] == {"server": 2, "link": 1, "held": 1}
    assert a.summary()["link_answered_by_name"] == {"InternAtom": 1}
    assert a.summary()["crossed_by_name"] == {"Setup": 1, "GetProperty": 1}
    assert a.summary()["held_behind"] == {"GetProperty": 1}


def test_a_held_answer_names_its_barrier_and_the_names_kept_are_bounded() -> None:
    a = WaitAnalysis(link=True)
    setup(a, 1, 0.0, 0.040)
    req(a, 1, 1, "ChangeProperty", 1.0)
    for seq in range(2, 2 + MAX_NAMES):  # the ChangeProperty's name is pushed out
        req(a, 1, seq, "NoOperation", 1.0)
    assert len(a.clients[1].names) == MAX_NAMES
    seq = 2 + MAX_NAMES
    a.mark(1, seq, behind=1)
    req(a, 1, seq, "InternAtom", 1.1)
    reply(a, 1, seq, "InternAtom", 1.14)
    a.mark(1, seq + 1, behind=seq - 1)
    req(a, 1, seq + 1, "InternAtom", 1.2)
    reply(a, 1, seq + 1, "InternAtom", 1.24)
    assert [w.behind for w in a.waits if w.seq] == ["request 1", "NoOperation"]


def test_marks_of_pipelined_answers_are_no_waits_and_do_not_linger() -> None:
    a = WaitAnalysis(link=True)
    setup(a, 1, 0.0, 0.040)
    for seq in (1, 2):
        a.mark(1, seq)
        req(a, 1, seq, "InternAtom", 1.0)
    req(a, 1, 3, "GetInputFocus", 1.0)
    reply(a, 1, 1, "InternAtom", 1.0)
    reply(a, 1, 2, "InternAtom", 1.0)
    reply(a, 1, 3, "GetInputFocus", 1.04)
    a.mark(2, 1)  # another client's mark is its own
    setup(a, 2, 0.0, 0.040)
    req(a, 2, 1, "InternAtom", 1.1)
    reply(a, 2, 1, "InternAtom", 1.1)
    assert [(w.client, w.seq, w.answered) for w in a.waits if w.seq] == \
        [(1, 3, Answered.SERVER), (2, 1, Answered.LINK)]
    assert not a.clients[1].marks and not a.clients[2].marks
    for seq in range(10, 10 + MAX_MARKS + 5):  # marks whose answers never come stay bounded
        a.mark(1, seq)
    assert len(a.clients[1].marks) == MAX_MARKS


def test_without_a_link_nothing_is_the_links() -> None:
    a = WaitAnalysis()
    setup(a, 1, 0.0, 0.001)
    req(a, 1, 1, "InternAtom", 1.0)
    reply(a, 1, 1, "InternAtom", 1.0)
    assert {w.answered for w in a.waits} == {Answered.NO_LINK}


def test_waits_are_bounded_and_a_gone_client_is_forgotten() -> None:
    a = WaitAnalysis(max_waits=3)
    setup(a, 1, 0.0, 0.001)
    for seq in range(1, 6):
        req(a, 1, seq, "GetInputFocus", float(seq))
        reply(a, 1, seq, "GetInputFocus", seq + 0.1)
    assert len(a.waits) == 3 and a.dropped == 3
    a.client_done(1)
    assert a.clients == {}


def test_perfetto_json_has_one_complete_event_per_wait_and_reads_back() -> None:
    a = WaitAnalysis(link=True)
    setup(a, 1, 100.0, 0.040)
    req(a, 1, 1, "CreateWindow", 100.1, wid=BASE + 1, parent=ROOT_WINDOW)
    a.mark(1, 2, behind=1)
    req(a, 1, 2, "InternAtom", 100.2)
    reply(a, 1, 2, "InternAtom", 100.201)
    req(a, 1, 3, "MapWindow", 100.3, window=BASE + 1)
    req(a, 1, 4, "GetProperty", 100.4)
    reply(a, 1, 4, "GetProperty", 100.45)
    doc = json.loads(json.dumps(a.to_perfetto()))
    complete = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(a.waits) == doc["otherData"]["waits"] == 3
    assert complete[1]["name"] == "InternAtom"
    assert complete[1]["ts"] == pytest.approx(200_000, abs=1)
    assert complete[1]["dur"] == pytest.approx(1_000, abs=1)
    assert [e["args"]["before_map"] for e in complete] == [True, True, False]
    assert [e["args"]["answered"] for e in complete] == ["server", "held", "server"]
    assert complete[1]["args"]["behind"] == "CreateWindow"
    back = from_perfetto(doc)
    assert [(w.name, w.seq, w.answered, w.behind) for w in back.waits] == \
        [(w.name, w.seq, w.answered, w.behind) for w in a.waits]
    assert back.first_map == pytest.approx(a.first_map)
    assert back.summary()["before_map"] == 2


@pytest.mark.parametrize("doc", [[], {"traceEvents": 3}, {"traceEvents": [], "otherData": 1},
                                 {"traceEvents": [{"ph": "X", "cat": "wait", "name": "x"}]}])
def test_what_is_not_waits_is_refused(doc: object) -> None:
    with pytest.raises(NotWaits):
        from_perfetto(doc)
