"""An answer given while a server message streams through waits for that message's end
(suppress/core.py): it is not lost when the stream stops exactly there."""

from __future__ import annotations

import struct

from tests.xproxy.test_suppress import Harness, intern, intern_reply, messages, warm_atoms


def big_reply(seq: int, extra: int = 4000) -> bytes:
    return struct.pack("<BBHI24x", 1, 0, seq, extra // 4) + b"\1" * extra


def test_an_answer_queued_behind_a_streaming_reply_follows_its_last_byte() -> None:
    h = Harness()
    warm_atoms(h, {b"FOO": 77})
    h.send(struct.pack("<BBHIhhHHI", 73, 2, 5, 1, 0, 0, 10, 10, 0xFFFFFFFF))  # GetImage
    image = h.s.seq
    reply = big_reply(image)
    h.server(reply[:100])  # the reply starts streaming to the client
    h.send(intern(b"FOO"))  # known: answered, but not in the middle of the reply
    assert h.to_client == reply[:100]
    h.server(reply[100:])  # the reply's last byte, and nothing after it
    assert messages(h.to_client) == [(1, image), (1, image + 1)]
    assert h.to_client.endswith(intern_reply(image + 1, 77))
