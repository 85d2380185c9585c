"""The framer's inner loop in C (xproxy/_speedups.c) against the same loop in Python: the same
answers on any input, the same errors on bad arguments, and the framer the same with either."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testing import x11wire as wire
from xproxy.x11 import connection, framing
from xproxy.x11.framing import py_skip_requests

from .test_connection import connected, feed_chunks

speedups = pytest.importorskip(
    "xproxy._speedups", reason="the C speedups were not built (no C compiler at install time)")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=256, max_size=256), st.booleans(),
       st.integers(0, 320), st.integers(0, 320))
def test_c_and_python_walk_alike(buf, holds, little, a, b):
    pos, end = min(a, b), max(a, b)
    try:
        expected = py_skip_requests(buf, pos, end, holds, little)
    except ValueError:
        with pytest.raises(ValueError):
            speedups.skip_requests(buf, pos, end, holds, little)
        return
    assert speedups.skip_requests(buf, pos, end, holds, little) == expected
    assert speedups.skip_requests(memoryview(buf), pos, end, holds, little) == expected
    counts_py, counts_c = array("Q", bytes(2048)), array("Q", bytes(2048))
    assert py_skip_requests(buf, pos, end, holds, little, counts_py) == expected
    assert speedups.skip_requests(buf, pos, end, holds, little, counts_c) == expected
    assert counts_c == counts_py and sum(counts_c) == expected[1]


def test_bad_arguments_are_errors_not_crashes():
    holds = bytes(256)
    with pytest.raises(ValueError):
        speedups.skip_requests(b"\x7f\x00\x01\x00", 0, 5, holds, True)  # end past the data
    with pytest.raises(ValueError):
        speedups.skip_requests(b"\x7f\x00\x01\x00", 0, 4, bytes(10), True)
    with pytest.raises(TypeError):
        speedups.skip_requests("text", 0, 4, holds, True)
    for counts in (array("Q", bytes(8)), array("I", bytes(2048)), bytearray(2048)):
        with pytest.raises(ValueError):
            speedups.skip_requests(b"\x7f\x00\x01\x00", 0, 4, holds, True, counts)
    with pytest.raises(BufferError):  # counts must be writable
        speedups.skip_requests(b"\x7f\x00\x01\x00", 0, 4, holds, True, bytes(2048))


@pytest.mark.parametrize("e", ["<", ">"])
def test_the_framer_is_the_same_with_either_loop(e, monkeypatch):
    rng = random.Random(7)
    kinds = [rng.choice(["noop", "put", "qe", "poly"]) for _ in range(3000)]
    build = {"noop": wire.request(e, 127), "put": wire.request(e, 72, 2, b"\x42" * 4000),
             "qe": wire.query_extension(e, b"RENDER"), "poly": wire.request(e, 70, 0, bytes(36))}
    stream = b"".join(build[k] for k in kinds)
    sizes = [rng.randint(1, 20000) for _ in range(200)]
    results = []
    for walk in (speedups.skip_requests, py_skip_requests):
        monkeypatch.setattr(connection, "skip_requests", walk)
        conn = connected(e)
        assert feed_chunks(conn.client_data, stream, sizes) == stream
        results.append((conn.client.seq, list(conn.pending)))
    assert results[0] == results[1] and results[0][0] == len(kinds)
    assert framing.skip_requests is speedups.skip_requests  # the C one is what runs
