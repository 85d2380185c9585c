"""Link resumption, in memory: sequenced frames acknowledged and dropped from the replay queue,
retransmission after a resumption giving the peer each frame exactly once and in order (with
and without compression, the connection cut anywhere, even mid-frame), the display host's
session table, memory bounded by ACKs, and a peer that breaks the rules. Then the Twisted
adapter's keepalive and dead-link timeout on a task.Clock."""

from __future__ import annotations

import random

import pytest
from twisted.internet import protocol, task
from twisted.internet.testing import StringTransport

from xproxy.link.protocol import (
    ACK,
    ACK_BYTES,
    ACK_FRAMES,
    HEADER,
    PING,
    PONG,
    U64,
    Credit,
    Data,
    Hello,
    Link,
    LinkProtocolError,
    Opened,
    ResumeRefused,
    SessionTable,
)
from xproxy.link.transport import LinkProtocol, LinkSession


def hello_pair(level: int | None = None) -> tuple[Link, Link]:
    app, disp = Link(compress_level=level), Link(compress_level=level)
    app.hello({"v": 1})
    disp.receive_data(app.data_to_send())
    disp.hello({"ok": True})
    app.receive_data(disp.data_to_send())
    return app, disp


def resume(app: Link, disp: Link, level: int | None = None) -> tuple[list, list]:
    """A new connection: app's HELLO names the session, the display host reads it with a
    fresh core that its session core adopts, answers, and both send again what is missing.
    Returns the events each side got after the HELLO."""
    app.new_connection()
    disp.new_connection()
    app.hello({"v": 1, "resume": {"session": "x"}})
    first = app.data_to_send()
    fresh = Link(compress_level=level)
    [hello] = fresh.receive_data(first)
    disp.adopt(fresh)
    disp.hello({"ok": True})
    disp.resume(hello.info["received"])
    back = app.receive_data(disp.data_to_send())
    assert isinstance(back[0], Hello)
    app.resume(back[0].info["received"])
    forth = disp.receive_data(app.data_to_send())
    return back[1:], forth


def frames(events: list) -> list:
    return [e for e in events if not isinstance(e, Hello)]


def test_acknowledged_frames_leave_the_replay_queue() -> None:
    app, disp = hello_pair()
    app.open(1)
    for i in range(10):
        app.send(1, bytes([i]) * 100)
    assert app.sent == 11 and app.acked == 0
    disp.receive_data(app.data_to_send())
    assert app.replay_bytes == 11 * HEADER.size + 2 + 1000  # OPEN "{}" and 10 DATA
    assert disp.ack_due()  # fewer than ACK_FRAMES: the adapter's idle timer asks
    disp.ack()
    assert not disp.ack_due()
    app.receive_data(disp.data_to_send())
    assert app.acked == 11 and app.replay_bytes == 0 and app.sent == 11


def test_acks_go_out_by_themselves_every_64_frames_or_256_kb() -> None:
    app, disp = hello_pair()
    app.open(1)
    for _ in range(ACK_FRAMES - 2):
        app.send(1, b"x")
    disp.receive_data(app.data_to_send())
    assert disp.data_to_send() == b""  # 63 frames: not yet
    app.send(1, b"x")
    disp.receive_data(app.data_to_send())
    app.receive_data(disp.data_to_send())
    assert app.acked == ACK_FRAMES
    app.send(1, b"y" * ACK_BYTES)  # one big frame is enough
    disp.receive_data(app.data_to_send())
    app.receive_data(disp.data_to_send())
    assert app.acked == ACK_FRAMES + 1 and app.replay_bytes == 0


def test_acks_bound_the_replay_queue() -> None:
    """A busy channel, the receiver crediting as it hands data on: the sender never holds
    more than 64 frames or 256 KB beyond what is on the wire, however much goes through."""
    app, disp = hello_pair(level=3)
    app.open(1)
    disp.receive_data(app.data_to_send())
    rng = random.Random(5)
    most, total = 0, 0
    for _ in range(3000):
        size = rng.choice([20, 200, 4000, 60_000])
        app.send(1, b"d" * size)
        total += size
        for e in disp.receive_data(app.data_to_send()):
            if isinstance(e, Data):
                disp.credit(1, len(e.data))
        most = max(most, app.replay_bytes)
        app.receive_data(disp.data_to_send())
    assert total > 20_000_000
    assert most <= ACK_BYTES + 60_000 + HEADER.size
    assert len(app._replay) <= ACK_FRAMES


@pytest.mark.parametrize("level", [None, 3])
@pytest.mark.parametrize("seed", range(12))
def test_after_resumptions_each_frame_arrives_exactly_once_in_order(level, seed) -> None:
    """Both ends send, the connection is cut at random points (mid-frame, mid-flush, with
    ACKs lost), written frames keep queueing while it is down, and after each resumption the
    peer has every frame once, in order."""
    rng = random.Random(seed)
    app, disp = hello_pair(level)
    app.open(1)
    app.open(2)
    sent: dict[str, list[tuple[int, bytes]]] = {"app": [], "disp": []}
    got: dict[str, list[tuple[int, bytes]]] = {"app": [], "disp": []}
    opened: list[int] = []
    ends = {"app": app, "disp": disp}

    def take(who: str, events: list) -> None:
        for e in events:
            if isinstance(e, Data):
                got[who].append((e.channel, e.data))
                ends[who].credit(e.channel, len(e.data))
            elif isinstance(e, Opened):
                opened.append(e.channel)

    def reconnect() -> None:
        back, forth = resume(app, disp, level)
        take("app", back)
        take("disp", forth)

    up = True
    for _ in range(80):
        if not up and rng.random() < 0.5:
            reconnect()
            up = True
        for who in ("app", "disp"):
            for _ in range(rng.randint(0, 6)):
                ch = rng.choice([1, 2])
                if ch not in ends[who].send_window:
                    continue  # the display host has not seen the OPEN yet
                data = rng.randbytes(rng.choice([1, 50, 3000]))
                ends[who].send(ch, data)
                sent[who].append((ch, data))
        if not up:
            continue
        for who, peer in (("app", "disp"), ("disp", "app")):
            wire = ends[who].data_to_send()
            if rng.random() < 0.15:  # the connection dies with part of this on the wire
                take(peer, ends[peer].receive_data(wire[: rng.randint(0, len(wire))]))
                up = False
                break
            take(peer, ends[peer].receive_data(wire))
    if not up:
        reconnect()
    for _ in range(3):  # what the last resumption's answers released
        take("disp", disp.receive_data(app.data_to_send()))
        take("app", app.receive_data(disp.data_to_send()))
    assert opened == [1, 2]
    assert got["disp"] == sent["app"]
    assert got["app"] == sent["disp"]
    assert app.window(1) == app.initial_window and disp.window(2) == disp.initial_window


def test_credit_and_close_are_replayed_too() -> None:
    app, disp = hello_pair()
    app.open(1)
    app.open(2)
    disp.receive_data(app.data_to_send())
    app.send(1, b"a" * 10)
    disp.receive_data(app.data_to_send())
    disp.credit(1, 10)
    app.close(2, "bye")
    lost = app.data_to_send()  # the CLOSE is lost with the connection
    assert lost
    disp.data_to_send()  # and so is the CREDIT
    back, forth = resume(app, disp)
    assert back == [Credit(1, 10)]
    assert [type(e).__name__ for e in forth] == ["Closed"]
    assert app.receive_data(disp.data_to_send()) == []  # the answering CLOSE
    assert list(app.send_window) == list(disp.send_window) == [1] and not app.closing
    assert app.window(1) == app.initial_window


def test_nothing_sequenced_goes_out_before_the_peer_says_where_it_is() -> None:
    app, disp = hello_pair()
    app.open(1)
    app.data_to_send()
    app.new_connection()
    app.send(1, b"queued while down")
    app.ack()  # no ACK either
    app.hello({"v": 1})
    hello_only = app.data_to_send()
    assert [type(e) for e in Link().receive_data(hello_only)] == [Hello]
    assert app.data_to_send() == b""
    disp.new_connection()
    fresh = Link()
    [hello] = fresh.receive_data(hello_only)
    assert hello.info["received"] == 0
    disp.adopt(fresh)
    disp.hello({})
    disp.resume(hello.info["received"])
    [h] = app.receive_data(disp.data_to_send())
    assert h.info["received"] == 0  # the OPEN never arrived
    assert app.resume(h.info["received"]) == 1  # the OPEN goes again, then the DATA
    assert disp.receive_data(app.data_to_send()) == [Opened(1, {}), Data(1, b"queued while down")]


def test_a_peer_without_recon_gets_no_acks_and_we_keep_nothing_for_it() -> None:
    old, new = Link(recon=False), Link()
    old.hello({"v": 1})
    new.hello({"v": 1})
    new.open(1)
    new.send(1, b"x" * 100)
    old.receive_data(new.data_to_send())
    assert new.replay_bytes > 0  # until it hears the peer's HELLO
    assert new.receive_data(old.data_to_send()) == [Hello({"v": 1})]
    assert new.peer_recon is False and new.replay_bytes == 0
    new.send(1, b"y")
    old.receive_data(new.data_to_send())
    assert new.replay_bytes == 0
    old.open(5)
    old.send(5, b"z" * 100)
    new.receive_data(old.data_to_send())
    new.ack()
    new.ping()
    assert not new.ack_due() and new.data_to_send() == b""
    with pytest.raises(LinkProtocolError, match="does not announce recon"):
        new.resume(0)


def test_ping_is_answered_with_pong() -> None:
    app, disp = hello_pair()
    app.ping(b"12345678")
    assert disp.receive_data(app.data_to_send()) == []
    assert disp.data_to_send() == HEADER.pack(PONG, 0, 8) + b"12345678"
    assert app.receive_data(HEADER.pack(PONG, 0, 8) + b"12345678") == []


@pytest.mark.parametrize(
    "frame,match",
    [
        (HEADER.pack(ACK, 0, 8) + U64.pack(1), "only 0 were sent"),
        (HEADER.pack(ACK, 0, 4) + b"\0\0\0\0", "bad payload"),
        (HEADER.pack(ACK, 3, 8) + U64.pack(0), "on channel 3"),
        (HEADER.pack(PING, 0, 65) + b"p" * 65, "PING of 65"),
        (HEADER.pack(PING, 2, 0), "on channel 2"),
        (HEADER.pack(1, 0, 2) + b"{}", "second HELLO"),
    ],
)
def test_bad_link_frames_are_protocol_errors(frame, match) -> None:
    app, _ = hello_pair()
    with pytest.raises(LinkProtocolError, match=match):
        app.receive_data(frame)


def test_an_ack_beyond_what_was_sent_or_going_backwards_is_a_protocol_error() -> None:
    app, _ = hello_pair()
    app.open(1)
    app.send(1, b"x")
    app.send(1, b"y")  # queued, not yet on the wire: it cannot have been received
    wire = app.data_to_send()
    app.send(1, b"z")
    with pytest.raises(LinkProtocolError, match="ACK of 4 frames; only 3 were sent"):
        app.receive_data(HEADER.pack(ACK, 0, 8) + U64.pack(4))
    app2, _ = hello_pair()
    app2.open(1)
    app2.send(1, b"x")
    app2.data_to_send()
    app2.receive_data(HEADER.pack(ACK, 0, 8) + U64.pack(2))
    with pytest.raises(LinkProtocolError, match="after one of 2"):
        app2.receive_data(HEADER.pack(ACK, 0, 8) + U64.pack(1))
    assert wire


@pytest.mark.parametrize("claim", [-1, 3, 10, "5", None, True])
def test_a_resumption_claiming_impossible_counts_is_a_protocol_error(claim) -> None:
    app, _ = hello_pair()
    app.open(1)
    for _ in range(8):
        app.send(1, b"x")
    app.data_to_send()
    app.receive_data(HEADER.pack(ACK, 0, 8) + U64.pack(4))
    app.new_connection()
    with pytest.raises(LinkProtocolError, match="received"):
        app.resume(claim)  # 4 acknowledged, 9 sent: 4..9 is possible, nothing else
    assert app.resume(6) == 3  # and nothing was lost by the refusal


def test_frames_before_the_resumption_is_answered_are_a_protocol_error() -> None:
    _, disp = hello_pair()
    rogue = Link()
    rogue.hello({"resume": {"session": "x"}})
    rogue.open(1)
    fresh = Link()
    fresh.receive_data(rogue.data_to_send())
    disp.new_connection()
    with pytest.raises(LinkProtocolError, match="before the resumption"):
        disp.adopt(fresh)


# -- the display host's sessions ------------------------------------------------------------


def test_session_table_resumes_only_a_known_live_session_with_the_same_key() -> None:
    table: SessionTable[str] = SessionTable(grace=60)
    sid = table.new("session A", "fp-a")
    assert len(sid) == 32 and sid != table.new("session B", "fp-a")  # 128 random bits
    assert table.claim(sid, "fp-a", now=0) == "session A"  # its connection never dropped
    with pytest.raises(ResumeRefused, match="does not know"):
        table.claim("0" * 32, "fp-a", now=0)
    with pytest.raises(ResumeRefused, match="does not know"):
        table.claim(None, "fp-a", now=0)
    with pytest.raises(ResumeRefused, match="another app host key"):
        table.claim(sid, "fp-b", now=0)
    assert table.lost(sid, now=100)
    assert table.expired(now=159.9) == []
    assert table.claim(sid, "fp-a", now=159.9) == "session A"
    assert table.lost(sid, now=200)
    with pytest.raises(ResumeRefused, match="expired"):
        table.claim(sid, "fp-a", now=260)
    with pytest.raises(ResumeRefused, match="does not know"):  # and it is gone
        table.claim(sid, "fp-a", now=0)
    assert not table.lost(sid, now=300)


def test_session_table_expires_lost_sessions_after_the_grace() -> None:
    table: SessionTable[str] = SessionTable(grace=5)
    a, b = table.new("a", "fp"), table.new("b", "fp")
    table.new("c", "fp")  # connected: never expires
    table.lost(a, now=10)
    table.lost(b, now=12)
    assert table.expired(now=14.9) == []
    assert table.expired(now=15) == ["a"]
    assert table.expired(now=100) == ["b"]
    assert len(table) == 1 and table.values() == ["c"]


# -- the adapter: keepalive and the dead-link timeout on a task.Clock ----------------------


class _Recorder(protocol.Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)


def _connected(clock: task.Clock) -> tuple[LinkProtocol, StringTransport,
                                          LinkProtocol, StringTransport]:
    a = LinkProtocol(clock, on_handshake=lambda link: {}, session=LinkSession(Link()))
    b = LinkProtocol(clock, on_handshake=lambda link: {}, session=LinkSession(
        Link(), on_open=lambda session, ch, info: ch.attach(_Recorder())))
    ta, tb = StringTransport(), StringTransport()
    a.makeConnection(ta)
    b.makeConnection(tb)
    a.core.hello({})
    b.core.hello({})
    a.flush()
    b.flush()
    return a, ta, b, tb


def _move(src: StringTransport, dst: LinkProtocol) -> None:
    data = src.value()
    src.clear()
    if data:
        dst.dataReceived(data)


def test_an_idle_link_pings_and_a_live_peer_keeps_it_up() -> None:
    clock = task.Clock()
    a, ta, b, tb = _connected(clock)
    _move(ta, b)
    _move(tb, a)
    for _ in range(60):  # a minute of silence from the programs
        clock.advance(1)
        _move(ta, b)
        _move(tb, a)
    assert not ta.disconnected and not tb.disconnected


def test_a_silent_peer_is_dropped_after_the_timeout() -> None:
    clock = task.Clock()
    a, ta, b, tb = _connected(clock)
    _move(ta, b)
    _move(tb, a)
    clock.advance(5)
    pings = ta.value()
    assert HEADER.pack(PING, 0, 0) in pings  # 5 s of silence: is anyone there?
    for _ in range(9):
        clock.advance(1)
    assert not ta.disconnected
    clock.advance(1)  # 15 s without a byte
    assert ta.disconnected


def test_the_idle_timer_acknowledges_what_came_since_the_last_ack() -> None:
    clock = task.Clock()
    a, ta, b, tb = _connected(clock)
    _move(ta, b)
    _move(tb, a)
    ch = a.open_channel()
    ch.attach(_Recorder())
    ch.write(b"hello")
    _move(ta, b)
    _move(tb, a)  # the CREDIT for it
    assert a.core.replay_bytes > 0 and b.core.replay_bytes > 0
    clock.advance(1)
    _move(ta, b)
    _move(tb, a)
    assert a.core.replay_bytes == 0 and b.core.replay_bytes == 0


def test_a_peer_that_credits_but_never_acknowledges_is_a_protocol_error() -> None:
    """Credit without acknowledgement would let our replay queue grow without end: past
    MAX_UNACKED the link is closed instead."""
    from xproxy.link.protocol import CREDIT, MAX_UNACKED

    app, disp = hello_pair()
    app.open(1)
    disp.receive_data(app.data_to_send())
    chunk = b"d" * 200_000
    with pytest.raises(LinkProtocolError, match="unacknowledged"):
        for _ in range(MAX_UNACKED // len(chunk) + 10):
            app.send(1, chunk)
            app.data_to_send()  # on the wire, never acknowledged
            app.receive_data(HEADER.pack(CREDIT, 1, 4) + len(chunk).to_bytes(4, "big"))
