"""The JSON-lines framing: golden frames, chunked feeding, and garbage."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from discovery.wire import Invalid, LineDecoder, Message, encode, error, ok

REQS = [{"id": 1, "op": "hello"}, {"id": "x", "op": "lookup", "type": "_kv._tcp", "name": "é"}, {"op": "list"}]
STREAM = b"".join(encode(r) for r in REQS)


def test_golden_frames() -> None:
    assert encode({"id": 1, "op": "hello"}) == b'{"id":1,"op":"hello"}\n'
    assert ok(3, services=[]) == b'{"id":3,"ok":true,"services":[]}\n'
    assert json.loads(error(4, "conflict", "taken")) == {"id": 4, "ok": False, "error": {"code": "conflict", "message": "taken"}}


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split_gives_the_same_messages(cuts) -> None:
    d = LineDecoder()
    out = []
    prev = 0
    for c in sorted(cuts) + [len(STREAM)]:
        out += d.receive_data(STREAM[prev:c])
        prev = c
    assert out == [Message(r) for r in REQS]


def test_one_byte_at_a_time_and_blank_lines() -> None:
    d = LineDecoder()
    out = []
    for b in b"\n\r\n" + STREAM:
        out += d.receive_data(bytes([b]))
    assert out == [Message(r) for r in REQS]


def test_oversized_line_fails_before_its_newline() -> None:
    d = LineDecoder(max_line=100)
    assert d.receive_data(b"x" * 100) == []
    [inv] = d.receive_data(b"x")
    assert isinstance(inv, Invalid) and "longer than 100" in inv.message
    assert d.failed and d.receive_data(encode({"op": "hello"})) == []


def test_bad_request_keeps_the_id_for_the_error_reply() -> None:
    [m, inv] = LineDecoder().receive_data(b'{"op":"hello"}\n{"id": 7, "op": 3}\n{"op":"list"}\n')
    assert m == Message({"op": "hello"}) and inv == Invalid("request has no 'op' string", 7)
    [inv] = LineDecoder().receive_data(b'{"id": true, "op": "x"}\n')
    assert "id must be" in inv.message


@given(st.binary(max_size=300))
def test_garbage_never_raises(data) -> None:
    d = LineDecoder(max_line=128)
    for item in d.receive_data(data) + d.receive_data(b"\n"):
        assert isinstance(item, (Message, Invalid))
