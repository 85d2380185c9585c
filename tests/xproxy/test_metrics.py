"""Metrics: counting from the headers the framers read, --stats summaries, and the
Prometheus endpoint scraped over HTTP on loopback."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from testing import x11wire as wire
from testing.xserver import require
from xproxy.observe.metrics import LATENCY_BUCKETS, Metrics
from xproxy.x11 import connection, framing
from xproxy.x11.connection import AuthPolicy, X11Connection
from xproxy.x11.decode.decoder import Decoder

from .test_connection import feed_chunks


def sample(text: str, metric: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(metric) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    raise AssertionError(f"no {metric}{{{want}}} in:\n{text}")


def session(conn: X11Connection) -> None:
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    conn.client_data(wire.query_extension("<", b"RENDER"))
    conn.client_data(wire.request("<", 8, 0, b"\1\0\0\0"))  # MapWindow: no reply
    conn.client_data(wire.request("<", 43))  # GetInputFocus
    conn.server_data(wire.query_extension_reply("<", 1, True, 139, 0, 142))
    conn.server_data(wire.event("<", 2, 19))
    conn.server_data(wire.reply("<", 3))
    conn.client_data(wire.request("<", 139, 7, b"\1\0\0\0"))  # RENDER:FreePicture
    conn.client_data(wire.request("<", 14, 0, b"\1\0\0\0"))  # GetGeometry
    conn.server_data(wire.error("<", 5, 9, 14))


def counted(clock=lambda: 0.0, observer=None) -> tuple[Metrics, X11Connection]:  # type: ignore[no-untyped-def]
    metrics = Metrics(clock)
    return metrics, X11Connection(AuthPolicy(None), observer=observer, tally=metrics.client(1))


def test_connection_metrics_from_a_session():
    metrics, conn = counted()
    session(conn)
    tally = metrics.active[1]
    m = metrics.live()[1]
    assert m.requests == {"QueryExtension": 1, "MapWindow": 1, "GetInputFocus": 1,
                          "RENDER:FreePicture": 1, "GetGeometry": 1}
    assert m.kinds["reply"] == 2 and m.kinds["event"] == 1 and m.kinds["error"] == 1
    assert m.kinds["setup"] == m.kinds["setup-reply"] == 1 and m.kinds["request"] == 5
    assert m.round_trips == 2  # the error is not a round trip; MapWindow waits for nothing
    assert m.bytes_from_client == conn.client.bytes
    assert m.bytes_from_server == conn.server.bytes
    assert m.messages_from_client == 6 and m.messages_from_server == 5
    assert not tally.pending  # (FreePicture was never waited for: RENDER says it has no reply)
    assert metrics.client_done(1) == m and not metrics.active
    assert metrics.totals().requests == m.requests and metrics.totals().round_trips == 2


def test_metrics_copy_and_decode_nothing():
    """Metrics alone count from headers: requests pass through untouched (not copied, no
    observer), and the bulk loop still walks runs of plain requests."""
    metrics, conn = counted()
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    assert conn.observer is None
    put = wire.request("<", 72, 2, bytes(4000))
    assert conn.client_data(put) is put
    noops = wire.request("<", 127) * 1000
    assert conn.client_data(noops) is noops
    assert metrics.active[1].core[127] == 1000  # (counted by skip_requests, in one call)
    assert metrics.live()[1].requests == {"PutImage": 1, "NoOperation": 1000}


def test_latency_uses_the_injected_clock():
    now = [10.0]
    metrics, conn = counted(lambda: now[0])
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    conn.client_data(wire.request("<", 43) + wire.request("<", 43))
    now[0] = 10.002
    conn.server_data(wire.reply("<", 1))
    now[0] = 10.5
    conn.server_data(wire.reply("<", 2))
    m = metrics.live()[1]
    assert m.round_trips == 2
    assert abs(m.latency_sum - 0.502) < 1e-9 and abs(m.latency_max - 0.5) < 1e-9
    assert m.latency_counts[LATENCY_BUCKETS.index(0.0025)] == 1
    assert m.latency_counts[LATENCY_BUCKETS.index(0.5)] == 1
    text = m.summary()
    assert "2 round trips" in text and "max 500.000 ms" in text and "GetInputFocus 2" in text


def test_a_series_of_replies_is_one_round_trip():
    now = [1.0]
    metrics, conn = counted(lambda: now[0])
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    conn.client_data(wire.request("<", 50, 0, bytes(4)))  # ListFontsWithInfo
    now[0] = 1.25
    conn.server_data(wire.reply("<", 1, 3) + wire.reply("<", 1, 3) + wire.reply("<", 1, 0))
    m = metrics.live()[1]
    assert m.round_trips == 1 and m.latency_sum == 0.25 and m.kinds["reply"] == 3


# A request pool for the comparison below: core with and without replies, big and small,
# an extension's with and without, and one of an extension the proxy never heard of.
_POOL = [wire.request("<", 127), wire.request("<", 72, 2, bytes(3000)),
         wire.request("<", 43), wire.request("<", 20, 0, bytes(20)),
         wire.request("<", 70, 0, bytes(36)), wire.request("<", 139, 7, bytes(4)),
         wire.request("<", 139, 0, bytes(8)), wire.request("<", 140, 3, bytes(4))]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(_POOL) - 1), max_size=300),
       st.lists(st.integers(1, 5000), min_size=1, max_size=50), st.booleans())
def test_counts_match_the_decoder_on_any_stream(picks, sizes, python_loop):
    """The tally's request names, counted in bulk and one by one in any chunking, with the C
    loop or the Python one, are the decoder's names for the same requests one by one."""
    names: Counter[str] = Counter()
    decoder = Decoder()
    decoder.add_extension("RENDER", 139)

    def watch(direction: str, seq: int, msg: bytes) -> None:
        if direction == "request":
            names[decoder.request_name(msg)] += 1

    metrics, conn = counted()
    watched = X11Connection(AuthPolicy(None), observer=watch)
    for c in (conn, watched):
        c.client_data(wire.setup_request("<"))
        c.server_data(wire.setup_success("<"))
        c.client_data(wire.query_extension("<", b"RENDER"))
        c.server_data(wire.query_extension_reply("<", 1, True, 139, 0, 142))
    stream = b"".join(_POOL[i] for i in picks)
    walk = framing.py_skip_requests if python_loop else connection.skip_requests
    with patch.object(connection, "skip_requests", walk):
        assert feed_chunks(conn.client_data, stream, sizes) == stream
    watched.client_data(stream)
    m = metrics.live()[1]
    assert m.requests == names and m.kinds["request"] == conn.client.seq == len(picks) + 1
    # waiting for replies: GetInputFocus, GetProperty, RENDER:QueryVersion and the unknown one
    tally = metrics.active[1]
    assert len(tally.pending) == sum(1 for i in picks if i in (2, 3, 6, 7))


def test_prometheus_text_from_a_private_registry():
    metrics = Metrics(lambda: 0.0)
    for number in (1, 2):
        session(X11Connection(AuthPolicy(None), tally=metrics.client(number)))
    metrics.client_done(1)
    text = generate_latest(metrics.registry()).decode()
    assert sample(text, "xproxy_clients_total") == 2
    assert sample(text, "xproxy_clients_connected") == 1
    assert sample(text, "xproxy_requests_total", name="GetInputFocus") == 2
    assert sample(text, "xproxy_requests_total", name="RENDER:FreePicture") == 2
    assert sample(text, "xproxy_round_trips_total") == 4
    assert sample(text, "xproxy_reply_latency_seconds_count") == 4
    assert sample(text, "xproxy_messages_total", kind="error") == 2
    assert sample(text, "xproxy_client_round_trips_total", client="2") == 2
    assert 'client="1"' not in text  # finished clients are in the totals only
    # the process-wide registry is left alone
    from prometheus_client import REGISTRY
    assert b"xproxy_" not in generate_latest(REGISTRY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stats_and_metrics_endpoint(xvfb, start_proxy):
    require("xdpyinfo")
    port = free_port()
    proxy = start_proxy("--stats", "--metrics", f"tcp:{port}:interface=127.0.0.1")
    for _ in range(2):
        done = subprocess.run(check=False, args=["xdpyinfo"], env=proxy.env, capture_output=True, timeout=30)
        assert done.returncode == 0
    # the second client's end is reported once the proxy has seen it go
    deadline = time.monotonic() + 10
    while proxy.log().count("xproxy: client ") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    assert sample(text, "xproxy_clients_total") == 2
    assert sample(text, "xproxy_requests_total", name="QueryExtension") >= 2
    assert sample(text, "xproxy_requests_total", name="BIG-REQUESTS:Enable") == 2
    trips = sample(text, "xproxy_round_trips_total")
    assert trips >= 10
    assert sample(text, "xproxy_reply_latency_seconds_count") == trips
    assert sample(text, "xproxy_bytes_total", direction="from_server") > 10000
    assert proxy.stop() == 0
    log = proxy.log()
    per_client = re.findall(r"xproxy: client (\d+): (\d+) bytes in .* (\d+) round trips", log)
    assert [c for c, _, _ in per_client] == ["1", "2"], log
    assert all(int(t) > 0 for _, _, t in per_client)
    assert re.search(r"xproxy: totals over 2 clients: .* round trips, reply latency mean", log)


def test_metrics_agree_with_the_trace_of_real_programs(xvfb, start_proxy, tmp_path):
    """What metrics count from headers (runs of NoOperations in bulk, round trips matched by
    sequence number) is what the decoder names in a trace of the same programs, which make
    the same requests every time."""
    require("xdpyinfo")
    require("x11perf")
    port = free_port()
    counting = start_proxy("--metrics", f"tcp:{port}:interface=127.0.0.1")
    trace = tmp_path / "trace.jsonl"
    tracing = start_proxy("--trace", str(trace), "--trace-format", "json")
    programs = [["xdpyinfo", "-ext", "all"], ["x11perf", "-noop", "-reps", "3000", "-repeat", "1"]]
    for proxy in (counting, tracing):
        for argv in programs:
            done = subprocess.run(argv, env=proxy.env, capture_output=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    counted = Counter({m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'^xproxy_requests_total\{name="([^"]+)"\} (\S+)$', text, re.MULTILINE)})
    assert tracing.stop() == 0
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    traced = Counter(o["name"] for o in lines if o["dir"] == "request")
    assert counted == traced and counted["NoOperation"] == 3000
    first_replies = sum(1 for o in lines if o["dir"] == "reply" and "latency" in o)
    assert sample(text, "xproxy_round_trips_total") == first_replies > 50
