"""relay._Outbox with the framer's `unfinished` count: the pieces of a large request go to the
server in one (gathering) write, with the piece that finishes it; small messages and message boundaries
are never held; a request larger than the cap still streams; finished bulk waits only while
the client's next bytes are already queued."""

from __future__ import annotations

import random
import struct

from xproxy.relay import AHEAD_MAX, COALESCE_MAX, _Outbox

from . import wire
from .test_connection import connected


def relay(conn, stream: bytes, sizes: list[int], queued=None) -> list[bytes]:
    """Feeds `stream` in pieces of `sizes`; `queued(pos)` says how many bytes the client has
    queued beyond `pos` (default: none)."""
    writes: list[bytes] = []
    box = _Outbox(writes.append, lambda parts: writes.append(b"".join(parts)),  # one writev
                  None if queued is None else lambda: queued(pos))
    pos = 0
    for size in [*sizes, len(stream)]:
        out = conn.client_data(stream[pos : pos + size])
        pos += size
        if out:
            box.send(out, conn.client.unfinished)
        if pos >= len(stream):
            break
    return writes


def test_a_large_request_in_pieces_leaves_in_one_write() -> None:
    conn = connected("<")
    put = wire.request("<", 72, 2, body=b"\x55" * 40000)
    noop = wire.request("<", 127)
    writes = relay(conn, noop + put + noop, [4, 16000, 16000, 8000])
    assert writes == [noop, put + noop]


def test_whole_messages_are_never_held() -> None:
    conn = connected("<")
    stream = wire.request("<", 127) * 3 + wire.request("<", 20, body=b"\1" * 8)
    writes = relay(conn, stream, [4, 4, 4])
    assert b"".join(writes) == stream and len(writes) == 4


def test_a_request_beyond_the_cap_streams() -> None:
    conn = connected("<")
    conn.client_data(wire.query_extension("<", b"BIG-REQUESTS"))
    conn.server_data(wire.query_extension_reply("<", 1, True, 133))
    conn.client_data(wire.request("<", 133, 0))  # BigReqEnable
    conn.server_data(wire.reply("<", 2, body=struct.pack("<I", 4194303)))
    huge = wire.big_request("<", 72, b"\x11" * (3 * COALESCE_MAX))
    rng = random.Random(3)
    sizes = [rng.randint(1000, 70000) for _ in range(60)]
    writes = relay(conn, huge, sizes)
    assert b"".join(writes) == huge
    assert len(writes) >= 3 and all(len(w) <= COALESCE_MAX + 70000 for w in writes)


def test_finished_bulk_waits_while_the_client_is_ahead() -> None:
    conn = connected("<")
    put = wire.request("<", 72, 2, body=b"\x55" * 40000)
    stream = put * 4
    # the client has written everything: a finished request waits for the next read, up to
    # AHEAD_MAX
    writes = relay(conn, stream, [len(put)] * 3, queued=lambda pos: len(stream) - pos)
    assert writes == [put * 2, put * 2]
    # nothing queued: each leaves when finished
    conn = connected("<")
    assert relay(conn, stream, [len(put)] * 3) == [put] * 4


def test_small_requests_are_never_held_for_the_client() -> None:
    conn = connected("<")
    small = wire.request("<", 20, body=b"\1" * 20)
    asked = []
    writes = relay(conn, small * 3, [len(small)] * 2,
                   queued=lambda pos: asked.append(pos) or 1 << 20)
    assert writes == [small] * 3 and asked == []


def test_bulk_held_for_the_client_stops_at_the_cap() -> None:
    conn = connected("<")
    put = wire.request("<", 72, 2, body=b"\x55" * 20000)
    stream = put * 12
    writes = relay(conn, stream, [len(put)] * 11, queued=lambda pos: len(stream) - pos)
    assert b"".join(writes) == stream
    assert all(len(w) < AHEAD_MAX + len(put) for w in writes) and len(writes) == 3
