"""Metrics: counting from decoded names, --stats summaries, and the Prometheus endpoint
scraped over HTTP on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request

from prometheus_client import generate_latest

from xproxy.metrics import LATENCY_BUCKETS, Metrics
from xproxy.observe import ClientObserver
from xproxy.protocol.connection import AuthPolicy, X11Connection

from ..support.xserver import require
from . import wire


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


def test_connection_metrics_from_a_session():
    now = [100.0]
    metrics = Metrics()
    obs = ClientObserver(1, lambda: now[0], None, metrics.client(1))
    conn = X11Connection(AuthPolicy(None), observer=obs)
    session(conn)
    m = metrics.active[1]
    assert m.requests == {"QueryExtension": 1, "MapWindow": 1, "GetInputFocus": 1,
                          "RENDER:FreePicture": 1, "GetGeometry": 1}
    assert m.kinds["reply"] == 2 and m.kinds["event"] == 1 and m.kinds["error"] == 1
    assert m.round_trips == 2  # the error is not a round trip; MapWindow waits for nothing
    assert m.bytes_from_client == conn.client.bytes
    assert m.bytes_from_server == conn.server.bytes
    assert m.messages_from_client == 6 and m.messages_from_server == 5
    assert not obs.decoder.pending
    # metrics alone decode names, not fields
    assert obs.fields is False


def test_latency_uses_the_injected_clock():
    now = [10.0]
    metrics = Metrics()
    obs = ClientObserver(1, lambda: now[0], None, metrics.client(1))
    conn = X11Connection(AuthPolicy(None), observer=obs)
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    conn.client_data(wire.request("<", 43) + wire.request("<", 43))
    now[0] = 10.002
    conn.server_data(wire.reply("<", 1))
    now[0] = 10.5
    conn.server_data(wire.reply("<", 2))
    m = metrics.active[1]
    assert m.round_trips == 2
    assert abs(m.latency_sum - 0.502) < 1e-9 and abs(m.latency_max - 0.5) < 1e-9
    assert m.latency_counts[LATENCY_BUCKETS.index(0.0025)] == 1
    assert m.latency_counts[LATENCY_BUCKETS.index(0.5)] == 1
    text = m.summary()
    assert "2 round trips" in text and "max 500.000 ms" in text and "GetInputFocus 2" in text


def test_prometheus_text_from_a_private_registry():
    metrics = Metrics()
    for number in (1, 2):
        obs = ClientObserver(number, lambda: 0.0, None, metrics.client(number))
        session(X11Connection(AuthPolicy(None), observer=obs))
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
