"""Compression on the link (zstandard after each side's HELLO), in memory: round trips in any
chunking, one side compressing and the other not, counters, and corrupt input."""

from __future__ import annotations

import os
import random

import pytest

from xproxy.link.protocol import Data, Hello, Link, LinkProtocolError, Opened


def feed(dst: Link, data: bytes, rng: random.Random | None = None) -> list:
    if rng is None:
        return dst.receive_data(data)
    events, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 300)
        events += dst.receive_data(data[pos : pos + step])
        pos += step
    return events


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_compressed_round_trip_in_any_chunking(seed) -> None:
    rng = random.Random(seed) if seed is not None else None
    app, disp = Link(compress_level=3), Link(compress_level=1)
    app.hello({"v": 1})
    app.open(1)
    payloads = [b"x" * 1000, os.urandom(5000), b"", bytes(range(256)) * 40, b"y" * 300_000]
    wire = b""
    for p in payloads:
        app.send(1, p)
        wire += app.data_to_send()  # one compressed block per flush
    events = feed(disp, wire, rng)
    assert events[0] == Hello({"v": 1, "z": "zstd", "recon": 1, "received": 0})
    assert events[1] == Opened(1, {})
    got = b"".join(e.data for e in events[2:] if isinstance(e, Data))
    assert got == b"".join(payloads)
    assert app.bytes_out == len(wire) and app.raw_out > app.bytes_out
    assert disp.raw_in == app.raw_out and disp.bytes_in == app.bytes_out
    # and back, the other side compressing at its own level
    disp.hello({"v": 1})
    disp.send(1, b"reply" * 1000)
    back = feed(app, disp.data_to_send(), rng)
    assert back[0] == Hello({"v": 1, "z": "zstd", "recon": 1, "received": 7})  # OPEN, 6 DATA
    assert b"".join(e.data for e in back[1:]) == b"reply" * 1000
    assert app.acked == 7 and app.replay_bytes == 0  # over 256 KB arrived: disp ACKed


def test_frames_queued_before_hello_follow_it_uncompressed_and_each_flush_stands_alone() -> None:
    app, disp = Link(compress_level=3), Link()
    app.hello({})
    first = app.data_to_send()
    app.open(1)
    app.send(1, b"abc")
    second = app.data_to_send()
    assert feed(disp, first) == [Hello({"z": "zstd", "recon": 1, "received": 0})]
    # nothing waits for more input: the second flush decodes completely on its own
    assert feed(disp, second) == [Opened(1, {}), Data(1, b"abc")]


def test_an_uncompressed_peer_is_understood() -> None:
    plain, z = Link(), Link(compress_level=3)
    plain.hello({"v": 1})
    plain.open(2)
    plain.send(2, b"hello")
    assert feed(z, plain.data_to_send()) == [Hello({"v": 1, "recon": 1, "received": 0}),
                                             Opened(2, {}), Data(2, b"hello")]


def test_corrupt_compressed_data_is_a_protocol_error() -> None:
    app, disp = Link(compress_level=3), Link()
    app.hello({})
    feed(disp, app.data_to_send())
    with pytest.raises(LinkProtocolError):
        disp.receive_data(b"\xff" * 64)


def test_unknown_compression_is_refused() -> None:
    plain = Link()
    plain.hello({"z": "lz77"})
    with pytest.raises(LinkProtocolError):
        Link().receive_data(plain.data_to_send())
