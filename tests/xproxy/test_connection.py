"""The pure X11 connection: framing, authentication and extension policy, byte by byte."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testing import x11wire as wire
from testing.x11wire import COOKIE, MIT, REAL
from xproxy.observe.metrics import ConnectionMetrics
from xproxy.x11.connection import AuthPolicy, X11Connection
from xproxy.x11.errors import ClientProtocolError, ServerProtocolError
from xproxy.x11.extensions import ExtensionPolicy
from xproxy.x11.tally import Tally

ORDERS = pytest.mark.parametrize("e", ["<", ">"], ids=["lsb", "msb"])


def connected(e: str, policy: ExtensionPolicy | None = None,
              tally: Tally | None = None) -> X11Connection:
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL), policy, tally=tally)
    assert conn.client_data(wire.setup_request(e)) == wire.setup_request(e, MIT, REAL)
    reply = wire.setup_success(e)
    assert conn.server_data(reply) == reply
    assert conn.established
    return conn


def feed_chunks(feed, data: bytes, sizes) -> bytes:
    out = []
    pos = 0
    for size in sizes:
        out.append(feed(data[pos : pos + size]))
        pos += size
    out.append(feed(data[pos:]))
    return b"".join(out)


@ORDERS
def test_setup_carries_the_real_cookie_upstream(e):
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL))
    out = conn.client_data(wire.setup_request(e))
    assert out == wire.setup_request(e, MIT, REAL)
    assert COOKIE not in out
    assert conn.to_client == []


@ORDERS
@pytest.mark.parametrize(
    "name,data,reason",
    [
        (MIT, bytes(16), b"Invalid MIT-MAGIC-COOKIE-1 key"),
        (b"", b"", b"No authorization protocol specified"),
        (b"XDM-AUTHORIZATION-1", COOKIE, b"Authorization protocol XDM-AUTHORIZATION-1 not supported"),
    ],
)
def test_bad_cookie_gets_a_failed_setup_reply(e, name, data, reason):
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL))
    out = conn.client_data(wire.setup_request(e, name, data) + wire.request(e, 127))
    assert out == b""
    failed = conn.take_to_client()
    assert failed[0] == 0
    n = failed[1]
    major, minor, words = struct.unpack_from(e + "HHH", failed, 2)
    assert (major, minor) == (11, 0)
    assert len(failed) == 8 + 4 * words
    assert failed[8 : 8 + n].startswith(reason)
    assert conn.closing is not None
    assert REAL not in failed
    assert conn.client_data(wire.request(e, 127)) == b""


@ORDERS
def test_requests_pass_byte_identical_in_any_chunking(e):
    stream = b"".join(
        [wire.request(e, 127), wire.request(e, 20, body=b"\1" * 8),
         wire.query_extension(e, b"RENDER"), wire.request(e, 72, 2, body=b"\x55" * 4000)] * 5
    )
    rng = random.Random(7)
    for sizes in ([1] * len(stream), [rng.randint(1, 50) for _ in range(300)], [3, 4000, 5]):
        conn = connected(e)
        assert feed_chunks(conn.client_data, stream, sizes) == stream
        assert conn.client.seq == 20
        assert [p[0] for p in conn.pending] == [3, 7, 11, 15, 19]


@ORDERS
def test_one_chunk_passes_without_a_copy(e):
    conn = connected(e)
    data = wire.request(e, 127) * 10
    assert conn.client_data(data) is data


@ORDERS
def test_hidden_extension_reads_as_absent_and_others_pass(e):
    conn = connected(e)
    conn.client_data(wire.query_extension(e, b"MIT-SHM") + wire.query_extension(e, b"RENDER"))
    shm = wire.query_extension_reply(e, 1, True, 130, 65, 128)
    render = wire.query_extension_reply(e, 2, True, 139, 0, 142)
    out = conn.server_data(shm + render)
    assert out == wire.query_extension_reply(e, 1, False, 0) + render
    assert conn.extensions["RENDER"].major_opcode == 139
    assert conn.extensions["MIT-SHM"].first_event == 65  # learned, though hidden
    assert not conn.pending


@ORDERS
def test_allow_ext_lets_mit_shm_through(e):
    conn = connected(e, ExtensionPolicy.from_options(allow=["MIT-SHM"]))
    conn.client_data(wire.query_extension(e, b"MIT-SHM"))
    shm = wire.query_extension_reply(e, 1, True, 130, 65, 128)
    assert conn.server_data(shm) == shm


@ORDERS
def test_list_extensions_omits_hidden_names_with_correct_length(e):
    conn = connected(e, ExtensionPolicy.from_options(hide=["XTEST"]))
    conn.client_data(wire.request(e, 99))
    names = [b"BIG-REQUESTS", b"MIT-SHM", b"RENDER", b"XTEST", b"Composite"]
    out = conn.server_data(wire.list_extensions_reply(e, 1, names))
    assert out == wire.list_extensions_reply(e, 1, [b"BIG-REQUESTS", b"RENDER", b"Composite"])


@ORDERS
def test_error_instead_of_reply_clears_the_pending_request(e):
    conn = connected(e)
    conn.client_data(wire.query_extension(e, b"MIT-SHM") + wire.query_extension(e, b"MIT-SHM"))
    conn.server_data(wire.error(e, 1))
    out = conn.server_data(wire.query_extension_reply(e, 2, True, 130))
    assert out == wire.query_extension_reply(e, 2, False, 0)


@ORDERS
def test_big_requests_once_enabled(e):
    conn = connected(e)
    conn.client_data(wire.query_extension(e, b"BIG-REQUESTS"))
    conn.server_data(wire.query_extension_reply(e, 1, True, 133))
    conn.client_data(wire.request(e, 133, 0))  # BigReqEnable
    conn.server_data(wire.reply(e, 2, body=struct.pack(e + "I", 4194303)))
    huge = wire.big_request(e, 72, b"\x11" * 300_000)
    stream = huge + wire.query_extension(e, b"MIT-SHM")
    assert feed_chunks(conn.client_data, stream, [1, 5, 4, 70000, 3]) == stream
    assert conn.client.seq == 4
    assert conn.pending[0][:2] == (4, "QueryExtension")


@ORDERS
def test_big_requests_enabled_before_the_query_reply_is_seen(e):
    """A link agent answers QueryExtension("BIG-REQUESTS") and the Enable from its cache, so
    the client sends the Enable and a big request before the server's reply to the query
    reaches this end; the reply then shows the Enable for what it was."""
    conn = connected(e)
    huge = wire.big_request(e, 72, b"\x11" * 300_000)
    stream = (wire.query_extension(e, b"BIG-REQUESTS") + wire.request(e, 140, 1)
              + wire.request(e, 133, 0) + huge + wire.query_extension(e, b"MIT-SHM"))
    assert feed_chunks(conn.client_data, stream, [7, 40, 9, 70000, 3]) == stream
    assert conn.client.seq == 5
    conn.server_data(wire.query_extension_reply(e, 1, True, 133))
    assert conn.client.big_requests
    enable = wire.reply(e, 3, body=struct.pack(e + "I", 100_000))
    assert conn.server_data(enable) == enable
    assert conn.client.max_big_request == 400_000
    assert conn.pending[0][:2] == (5, "QueryExtension")
    assert conn.client_data(huge[:100]) == huge[:100]  # still framed as big


@ORDERS
@pytest.mark.parametrize("present", [True, False])
def test_a_big_request_without_the_enable_is_refused_once_the_reply_says_so(e, present):
    conn = connected(e)
    conn.client_data(wire.query_extension(e, b"BIG-REQUESTS") + wire.request(e, 140, 0)
                     + struct.pack(e + "BBHI", 72, 0, 0, 100))
    with pytest.raises(ClientProtocolError, match="without BIG-REQUESTS"):
        conn.server_data(wire.query_extension_reply(e, 1, present, 133 if present else 0))


@ORDERS
def test_a_request_the_proxy_reads_whole_cannot_be_big(e):
    """QueryExtension is read whole (its reply may be rewritten): one of megabytes, through
    BIG-REQUESTS, is refused at its header instead of being held in memory."""
    conn = connected(e)
    conn.client.big_requests = True
    with pytest.raises(ClientProtocolError, match="longer than any request of its kind"):
        conn.client_data(struct.pack(e + "BBHI", 98, 0, 0, 4_000_000) + b"\0" * 100)
    conn = connected(e)
    longest = wire.query_extension(e, b"x" * 65535)  # the longest real one passes
    assert conn.client_data(longest) == longest


@ORDERS
def test_zero_length_request_without_big_requests_is_refused(e):
    conn = connected(e)
    with pytest.raises(ClientProtocolError, match="BIG-REQUESTS"):
        conn.client_data(struct.pack(e + "BBHI", 72, 0, 0, 100))


@ORDERS
def test_big_request_shorter_than_its_header_is_refused(e):
    conn = connected(e)
    conn.client.big_requests = True
    with pytest.raises(ClientProtocolError, match="less than 2"):
        conn.client_data(struct.pack(e + "BBHI", 72, 0, 0, 1))


@ORDERS
def test_generic_events_carry_their_length(e):
    conn = connected(e)
    conn.client_data(wire.request(e, 43) + wire.query_extension(e, b"MIT-SHM"))
    stream = (
        wire.generic_event(e, 1, 131, 5)
        + wire.event(e, 1)
        + bytes([35 | 0x80]) + wire.generic_event(e, 1, 131, 2)[1:]
        + wire.query_extension_reply(e, 2, True, 130)
    )
    expected = stream[: -32] + wire.query_extension_reply(e, 2, False, 0)
    assert feed_chunks(conn.server_data, stream, [1] * len(stream)) == expected
    assert conn.stats.events == 3


@ORDERS
def test_sequence_numbers_wrap_at_16_bits(e):
    conn = connected(e)
    conn.client_data(wire.request(e, 127) * 70_000 + wire.query_extension(e, b"MIT-SHM"))
    assert conn.client.seq == 70_001
    conn.server_data(wire.event(e, 65_535))  # an event along the way, before the wrap
    out = conn.server_data(wire.query_extension_reply(e, 70_001, True, 130))
    assert out == wire.query_extension_reply(e, 70_001, False, 0)
    assert conn.server.last_seq == 70_001


@ORDERS
def test_setup_failure_from_server_passes_to_client(e):
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL))
    conn.client_data(wire.setup_request(e))
    reason = wire.pad(b"Invalid MIT-MAGIC-COOKIE-1 key")
    failed = struct.pack(e + "BBHHH", 0, 30, 11, 0, len(reason) // 4) + reason
    assert conn.server_data(failed) == failed
    assert not conn.established
    assert conn.setup_reply.reason == "Invalid MIT-MAGIC-COOKIE-1 key"


def test_bad_byte_order_is_a_client_protocol_error():
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL))
    with pytest.raises(ClientProtocolError, match="byte-order"):
        conn.client_data(b"GET / HTTP/1.1\r\n\r\n")


def test_server_message_of_absurd_length_is_a_server_protocol_error():
    conn = connected("<")
    with pytest.raises(ServerProtocolError):
        conn.server_data(struct.pack("<BBHI24x", 1, 0, 0, 0xFFFFFFFF))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20), st.sampled_from("<>"),
       st.booleans())
def test_client_garbage_never_escapes_as_anything_but_a_protocol_error(data, sizes, e, counted):
    tally = Tally(lambda: 0.0) if counted else None  # (metrics count as the framer frames)
    conn = connected(e, tally=tally)
    try:
        feed_chunks(conn.client_data, data, sizes)
    except ClientProtocolError:
        pass
    if tally is not None:
        assert sum(ConnectionMetrics.of(1, tally).requests.values()) == conn.client.seq


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=20), st.sampled_from("<>"),
       st.booleans())
def test_server_garbage_never_escapes_as_anything_but_a_protocol_error(data, sizes, e, counted):
    tally = Tally(lambda: 0.0) if counted else None
    conn = connected(e, tally=tally)
    conn.client_data(wire.query_extension(e, b"MIT-SHM") + wire.request(e, 99))
    try:
        feed_chunks(conn.server_data, data, sizes)
    except ServerProtocolError:
        pass
    if tally is not None:
        assert ConnectionMetrics.of(1, tally).round_trips <= 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from("<>"))
def test_garbage_setup_is_refused_or_framed_never_crashes(data, e):
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL))
    try:
        conn.client_data(bytes([0x6C if e == "<" else 0x42]) + data)
    except ClientProtocolError:
        pass


def request_kinds(e: str) -> dict[str, bytes]:
    """Requests by the names the stream tests draw from."""
    return {
        "noop": wire.request(e, 127),
        "qe-shm": wire.query_extension(e, b"MIT-SHM"),
        "qe-render": wire.query_extension(e, b"RENDER"),
        "put": wire.request(e, 72, 2, b"\x42" * 100),
        "le": wire.request(e, 99),
        "big": wire.request(e, 72, 2, bytes(range(200)) * 30),
    }


def feed_views(feed, data: bytes, sizes) -> bytes:
    """As the relay's buffered reads do: each chunk arrives as a view of one buffer, which
    is overwritten as soon as the feed returns."""
    buf = bytearray(max(len(data), 1))
    out = []
    pos = 0
    for size in [*sizes, len(data)]:
        chunk = data[pos : pos + size]
        pos += len(chunk)
        buf[: len(chunk)] = chunk
        out.append(bytes(feed(memoryview(buf)[: len(chunk)])))
        buf[: len(chunk)] = b"\xee" * len(chunk)
        if pos >= len(data):
            break
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([feed_chunks, feed_views]),
       st.lists(st.sampled_from(["noop", "qe-shm", "qe-render", "put", "le"]), max_size=30),
       st.lists(st.integers(1, 97), max_size=40), st.sampled_from("<>"))
def test_any_request_stream_passes_through_in_any_split(pieces, kinds, sizes, e):
    """In pieces of bytes, or as views of one reused buffer (the relay's buffered reads)."""
    build = request_kinds(e)
    stream = b"".join(build[k] for k in kinds)
    conn = connected(e)
    assert pieces(conn.client_data, stream, sizes) == stream
    assert conn.client.seq == len(kinds)


@ORDERS
def test_held_messages_read_from_views_are_copies(e):
    conn = connected(e)
    queries = wire.query_extension(e, b"MIT-SHM") + wire.query_extension(e, b"RENDER")
    assert feed_views(conn.client_data, queries, [3, 9, 20]) == queries
    replies = wire.query_extension_reply(e, 1, True, 130) + wire.query_extension_reply(e, 2, True, 139)
    out = feed_views(conn.server_data, replies, [5, 40])
    assert out == wire.query_extension_reply(e, 1, False, 0) + replies[32:]  # MIT-SHM hidden
    assert conn.extensions["RENDER"].major_opcode == 139


def test_golden_bytes_agree_with_python_xlib():
    from Xlib.protocol import request

    built = request.QueryExtension._request.to_binary(name="MIT-SHM")
    assert built == wire.query_extension("<", b"MIT-SHM")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["noop", "qe-shm", "qe-render", "put", "le", "big"]), max_size=25),
       st.lists(st.sampled_from(["event", "reply", "generic", "error"]), max_size=25),
       st.lists(st.integers(1, 97), max_size=40), st.sampled_from("<>"))
def test_an_observer_sees_each_message_once_and_the_bytes_pass_unchanged(kinds, down, sizes, e):
    """With an observer, requests and server messages are watched (passed on as they come,
    a copy shown once whole) except those the policy may rewrite, which are held."""
    seen: list[tuple[str, int, bytes]] = []
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL), None,
                         lambda d, seq, msg: seen.append((d, seq, msg)))
    conn.client_data(wire.setup_request(e))
    conn.server_data(wire.setup_success(e))
    seen.clear()
    build = request_kinds(e)
    requests = [build[k] for k in kinds]
    stream = b"".join(requests)
    assert feed_chunks(conn.client_data, stream, sizes) == stream
    assert seen == [("request", i + 1, r) for i, r in enumerate(requests)]
    seen.clear()
    # what the server sends back, none of it an answer the proxy reads (seq 0 is long gone)
    msgs = {"event": ("event", wire.event(e, 0)), "error": ("error", wire.error(e, 0)),
            "reply": ("reply", wire.reply(e, 0, extra=b"\x07" * 300)),
            "generic": ("event", wire.generic_event(e, 0, 131, 5))}
    replies = [msgs[k] for k in down]
    stream = b"".join(m for _, m in replies)
    conn.pending.clear()
    assert feed_chunks(conn.server_data, stream, sizes) == stream
    assert [(d, m) for d, _, m in seen] == replies


@ORDERS
def test_relay_totals_and_metrics_agree_on_what_connections_did(e):
    """The relay's summary on exit and `--stats` read one record (x11/traffic.py)."""
    from xproxy.relay.proxy import Totals

    totals, summed = Totals(), ConnectionMetrics()
    for n in (1, 2):
        conn = connected(e)
        for _ in range(n):
            conn.client_data(wire.request(e, 99))
        totals.add(conn)
        summed.add(ConnectionMetrics.of_connection(n, conn))
    assert summed.kinds["request"] == 3
    assert totals.traffic.bytes_from_client == summed.bytes_from_client > 0
    assert totals.traffic.bytes_from_server == summed.bytes_from_server > 0
    assert totals.summary() == (
        f"0 clients (0 refused, 0 protocol errors); {summed.bytes_from_client} bytes from "
        f"clients, {summed.bytes_from_server} from the server; 3 requests, 0 replies, "
        "0 events, 0 errors")
