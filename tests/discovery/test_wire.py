"""The JSON-lines framing: golden frames, chunked feeding, and garbage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.wire import Invalid, LineDecoder, LineSplitter, Message, encode, error, ok

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
    assert isinstance(inv, Invalid) and "longer than 100" in inv.message and inv.fatal
    assert d.failed and d.receive_data(encode({"op": "hello"})) == []


def test_a_bad_request_keeps_its_id_and_the_stream_goes_on() -> None:
    [m, inv, m2] = LineDecoder().receive_data(b'{"op":"hello"}\n{"id": 7, "op": 3}\n{"op":"list"}\n')
    assert m == Message({"op": "hello"}) and m2 == Message({"op": "list"})
    assert inv == Invalid("field 'op' must be a string, not a number", 7)
    [inv] = LineDecoder().receive_data(b'{"id": true, "op": "x"}\n')
    assert "id must be" in inv.message and inv.id is None and not inv.fatal
    [inv, m] = LineDecoder().receive_data(b'{"id": 3, "op": "nope"}\n{"op":"hello"}\n')
    assert inv == Invalid("unknown op 'nope'", 3, "bad-op") and m == Message({"op": "hello"})


@pytest.mark.parametrize("depth", [5000, 30_000])
def test_deep_nesting_is_refused_as_found(depth) -> None:
    line = b'{"id": 4, "op": "lookup", "type": "_a._tcp", "name": ' + b"[" * depth + b"]" * depth + b"}\n"
    [inv, m] = LineDecoder(max_line=len(line)).receive_data(line + b'{"op": "hello"}\n')
    assert inv == Invalid("request nests arrays or objects too deeply") and m == Message({"op": "hello"})


def test_shallower_nesting_is_refused_by_type() -> None:
    line = b'{"id": 4, "op": "lookup", "type": "_a._tcp", "name": ' + b"[" * 500 + b"]" * 500 + b"}\n"
    [inv] = LineDecoder().receive_data(line)
    assert inv == Invalid("lookup: field 'name' must be a string, not a list", 4)


def test_line_splitter_reads_lines_of_any_size_in_pieces() -> None:
    big = b"y" * 3_000_000
    sp = LineSplitter()
    out = []
    for i in range(0, len(big), 4096):
        out += sp.receive_data(big[i:i + 4096])
    assert out == []
    assert sp.receive_data(b"\nab\n\nc") == [big, b"ab", b""]
    assert sp.receive_data(b"\n") == [b"c"]
    capped = LineSplitter(max_line=4)
    assert capped.receive_data(b"abcd\nabcde") == [b"abcd"] and capped.overflow


@given(st.binary(max_size=300))
def test_garbage_never_raises(data) -> None:
    d = LineDecoder(max_line=128)
    for item in d.receive_data(data) + d.receive_data(b"\n"):
        assert isinstance(item, (Message, Invalid))
