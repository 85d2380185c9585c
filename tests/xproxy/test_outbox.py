"""relay._Outbox with the framer's `unfinished` count: the pieces of a large request go to the
server in one (gathering) write, with the piece that finishes it; small messages and message boundaries
are never held; a request larger than the cap still streams."""

from __future__ import annotations

import random
import struct

from testing import x11wire as wire
from xproxy.relay.proxy import COALESCE_MAX, _Outbox

from .test_connection import connected


def relay(conn, stream: bytes, sizes: list[int]) -> list[bytes]:
    writes: list[bytes] = []
    box = _Outbox(writes.append, lambda parts: writes.append(b"".join(parts)))  # one writev
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
