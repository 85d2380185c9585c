"""The link protocol core and its channel flow control, in memory."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xproxy.link.protocol import (
    HEADER,
    MAX_PAYLOAD,
    Closed,
    Credit,
    Data,
    Hello,
    Link,
    LinkProtocolError,
    Opened,
)


def pump(a: Link, b: Link, split: int | None = None) -> list:
    data = a.data_to_send()
    if split is None:
        return b.receive_data(data)
    events = []
    for i in range(0, len(data), split):
        events += b.receive_data(data[i : i + split])
    return events


def test_hello_open_data_credit_close():
    app, disp = Link(window=100), Link(window=100)
    app.hello({"v": 1})
    assert pump(app, disp) == [Hello({"v": 1, "recon": 1, "received": 0})]
    app.open(1, {"x": 2})
    app.send(1, b"a" * 60)
    assert pump(app, disp, split=1) == [Opened(1, {"x": 2}), Data(1, b"a" * 60)]
    assert app.window(1) == 40
    disp.credit(1, 60)
    disp.send(1, b"reply")
    assert pump(disp, app) == [Credit(1, 60), Data(1, b"reply")]
    assert app.window(1) == 100
    app.close(1, "bye")
    assert pump(app, disp) == [Closed(1, "bye")]
    assert pump(disp, app) == []  # the answering CLOSE is swallowed
    assert not app.send_window and not disp.send_window and not app.closing


def test_data_racing_a_close_is_dropped():
    app, disp = Link(), Link()
    app.open(1)
    pump(app, disp)
    disp.send(1, b"late")  # sent before the CLOSE below arrives
    app.close(1)
    assert pump(disp, app) == []
    assert pump(app, disp) == [Closed(1, "")]


def test_large_writes_are_split_into_frames():
    app, disp = Link(window=10 * MAX_PAYLOAD), Link(window=10 * MAX_PAYLOAD)
    app.open(1)
    blob = bytes(random.Random(1).randbytes(3 * MAX_PAYLOAD + 5))
    app.send(1, blob)
    events = pump(app, disp, split=70_000)
    assert b"".join(e.data for e in events if isinstance(e, Data)) == blob


@pytest.mark.parametrize(
    "frame,match",
    [
        (HEADER.pack(3, 9, 1) + b"x", "not open"),
        (HEADER.pack(99, 0, 0), "unknown frame type"),
        (HEADER.pack(3, 1, MAX_PAYLOAD + 1), "exceeds"),
        (HEADER.pack(2, 1, 3) + b"{x}", "bad JSON"),
        (HEADER.pack(2, 0, 2) + b"{}", "in use"),
        (HEADER.pack(1, 4, 2) + b"{}", "HELLO on a channel"),
        (HEADER.pack(4, 5, 4) + struct.pack(">I", 1), "not open"),
    ],
)
def test_protocol_errors(frame, match):
    with pytest.raises(LinkProtocolError, match=match):
        Link().receive_data(frame)


def test_reopening_a_channel_is_an_error():
    app, disp = Link(), Link()
    app.open(1)
    pump(app, disp)
    with pytest.raises(LinkProtocolError, match="in use"):
        disp.receive_data(HEADER.pack(2, 1, 2) + b"{}")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_link_protocol_errors(data):
    try:
        Link().receive_data(data)
    except LinkProtocolError:
        pass


# -- the Twisted channel transport ----------------------------------------------------------

from twisted.internet import protocol, task
from twisted.internet.testing import StringTransport

from xproxy.link.transport import LinkProtocol, LinkSession


class Recorder(protocol.Protocol):
    def __init__(self):
        self.data = []
        self.lost = False

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason=None):
        self.lost = True


class Producer:
    def __init__(self):
        self.paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False


def linked_pair():
    clock = task.Clock()
    b_opened = []
    a = LinkProtocol(clock, on_handshake=lambda link: {}, session=LinkSession(Link()))
    b = LinkProtocol(clock, on_handshake=lambda link: {}, session=LinkSession(
        Link(), on_open=lambda session, ch, info: (b_opened.append(ch), ch.attach(Recorder()))))
    ta, tb = StringTransport(), StringTransport()
    a.makeConnection(ta)
    b.makeConnection(tb)

    def flush():
        moved = True
        while moved:
            moved = False
            for src, dst in ((ta, b), (tb, a)):
                data = src.value()
                if data:
                    src.clear()
                    dst.dataReceived(data)
                    moved = True

    return a, b, b_opened, flush


def test_window_exhaustion_pauses_the_source_and_credit_resumes_it():
    a, _b, opened, flush = linked_pair()
    a.core.initial_window = 1000
    ch = a.open_channel()
    ch.attach(Recorder())
    source = Producer()
    ch.registerProducer(source, True)
    ch.write(b"x" * 999)
    assert not source.paused
    ch.write(b"x" * 10)
    assert source.paused  # window spent: stop reading the local socket
    flush()
    assert not source.paused  # the far end handed the data on and returned credit
    assert b"".join(opened[0].protocol.data) == b"x" * 1009


def test_a_paused_consumer_holds_data_and_credit():
    a, _b, opened, flush = linked_pair()
    a.core.initial_window = 1000
    ch = a.open_channel()
    ch.attach(Recorder())
    source = Producer()
    ch.registerProducer(source, True)
    ch.write(b"")
    ch.write(b"y")
    flush()
    far = opened[0]
    far.pauseProducing()  # its local socket is backed up
    ch.write(b"z" * 1200)
    flush()
    assert source.paused and far.protocol.data == [b"y"]
    far.resumeProducing()
    flush()
    assert far.protocol.data == [b"y", b"z" * 1200] and not source.paused


def test_closing_a_channel_reaches_the_far_protocol():
    a, b, opened, flush = linked_pair()
    ch = a.open_channel()
    ch.attach(Recorder())
    ch.write(b"hi")
    flush()
    ch.loseConnection()
    flush()
    assert opened[0].protocol.lost and ch.protocol.lost
    assert not a.channels and not b.channels
