"""CHANGED link frames (type 10): the display host's watch telling an app host what changed,
in memory; and the app host's agent forgetting what they name."""

from __future__ import annotations

import json

import pytest

from xproxy.link.protocol import CHANGED, HEADER, DisplayChanged, Hello, Link, LinkProtocolError
from xproxy.link.transport import LinkSession

from .test_link import pump


def linked() -> tuple[Link, Link]:
    app, disp = Link(compress_level=3), Link(compress_level=3)
    app.hello({"v": 1, "watch": 1})
    disp.hello({"v": 1, "watch": ["props"]})
    assert isinstance(pump(app, disp)[0], Hello)
    assert isinstance(pump(disp, app)[0], Hello)
    return app, disp


def test_a_change_reaches_the_app_host_ahead_of_data_queued_with_it() -> None:
    app, disp = linked()
    app.open(1)
    pump(app, disp)
    disp.send(1, b"x11 bytes")
    disp.changed({"props": [23], "groups": ["randr"]})
    events = pump(disp, app, split=3)
    assert events[0] == DisplayChanged({"props": [23], "groups": ["randr"]})
    assert events[1].data == b"x11 bytes"


def test_a_change_is_not_replayed_after_a_resumption() -> None:
    _, disp = linked()
    disp.new_connection()
    disp.changed({"stop": "gone"})  # no connection: nothing is kept for the next one
    disp.hello({"v": 1})
    disp.resume(0)
    assert [e for e in pump(disp, Link()) if isinstance(e, DisplayChanged)] == []


@pytest.mark.parametrize("payload, channel", [(b"[1, 2]", 0), (b"{bad", 0), (b"{}", 3)])
def test_a_bad_changed_frame_is_a_protocol_error(payload: bytes, channel: int) -> None:
    app = Link()
    with pytest.raises(LinkProtocolError, match="CHANGED"):
        app.receive_data(HEADER.pack(CHANGED, channel, len(payload)) + payload)


def test_the_session_hands_changes_to_its_listener() -> None:
    seen = []
    session = LinkSession(Link())
    session.dispatch(DisplayChanged({"props": [1]}))  # no listener: dropped
    session.on_changed = seen.append
    session.dispatch(DisplayChanged({"props": [1]}))
    assert seen == [{"props": [1]}]


def test_the_agent_forgets_what_a_change_names_and_everything_on_a_bad_or_stop_one() -> None:
    from twisted.internet.task import Clock

    from xproxy.agent.link_agent import DisplayHost, DisplayTrust, LinkAgent
    from xproxy.suppress.core import DisplayCache, Kind

    trust = DisplayTrust("t", identity=object(), known=object())  # type: ignore[arg-type]
    agent = LinkAgent(Clock(), DisplayHost("h", 1, "t"), trust=trust)  # type: ignore[arg-type]
    cache = agent.cache = DisplayCache("epoch")
    cache.watch(["props", "randr"])

    def fill() -> None:
        cache.learn_watched(("<", Kind.ROOT_PROPERTY, b"a"), b"r1", 23, cache.generation)
        cache.learn_watched(("<", Kind.ROOT_PROPERTY, b"b"), b"r2", 24, cache.generation)
        cache.learn_watched(("<", Kind.WATCHED, b"c"), b"r3", "randr", cache.generation)

    fill()
    agent._display_changed({"props": [23], "groups": []})
    assert {k[2] for k in cache.watched} == {b"b", b"c"}
    agent._display_changed({"props": [], "groups": ["randr"]})
    assert {k[2] for k in cache.watched} == {b"b"}
    for odd in ({"props": "23"}, {"props": [None]}, {"all": True}):
        fill()
        agent._display_changed(odd)
        assert not cache.watched
    fill()
    agent._display_changed({"stop": "the X server closed the watching connection"})
    assert not cache.watched and not cache.watching
    assert cache.stats.changes == 6
    assert json.loads(json.dumps(cache.to_json()))["replies"] == {}  # never written to disk
