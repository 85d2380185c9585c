"""What tracing costs per message, without I/O: a GetProperty round trip and a 40 KB PutImage
through one proxied connection (X11Connection: framing, decoding, formatting a line into
memory), untraced, with metrics only (counted from headers), and traced as text and as JSON
Lines.

    .venv/bin/python benchmarks/tracecost.py [--number N]

The x11perf figures with real processes are xrelay.py's; this shows where a traced message's
CPU goes (BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import io
import struct
import timeit

from testing import x11wire as wire
from testing.x11wire import COOKIE, MIT, REAL
from xproxy.observe.instruments import Instruments
from xproxy.x11.connection import AuthPolicy, Watch, X11Connection


def connection(mode: str) -> tuple[X11Connection, io.StringIO]:
    out = io.StringIO()
    observers = None
    if mode == "metrics":
        observers = Instruments(lambda: 1.0, stats=True).observers
    elif mode != "untraced":
        observers = Instruments(lambda: 1.0, out, mode).observers
    watch = observers(1) if observers is not None else Watch()
    conn = X11Connection(AuthPolicy(COOKIE, MIT, REAL), None, watch.observer, watch.tally)
    conn.client_data(wire.setup_request("<"))
    conn.server_data(wire.setup_success("<"))
    return conn, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=20000)
    n = ap.parse_args().number
    get = struct.pack("<BBHIIIII", 20, 0, 6, 0x400001, 23, 31, 0, 1000)  # GetProperty
    reply = wire.reply("<", 0, 8, struct.pack("<III", 31, 0, 5), b"hello")
    body = struct.pack("<IIHHhhBBxx", 0x400001, 0x400002, 100, 100, 0, 0, 0, 24) + bytes(40000)
    put = struct.pack("<BBH", 72, 2, (4 + len(body)) // 4) + body
    rows = []
    for mode in ("untraced", "metrics", "text", "json"):
        conn, out = connection(mode)
        seq = [1]

        def round_trip(conn=conn, out=out, seq=seq) -> None:
            conn.client_data(get)
            seq[0] += 1
            conn.server_data(reply[:2] + struct.pack("<H", seq[0] & 0xFFFF) + reply[4:])
            if seq[0] % 1000 == 0:
                out.seek(0)
                out.truncate()

        def put_image(conn=conn, out=out, seq=seq) -> None:
            conn.client_data(put)
            seq[0] += 1
            if seq[0] % 1000 == 0:
                out.seek(0)
                out.truncate()

        rt = min(timeit.repeat(round_trip, number=n, repeat=3)) / n * 1e6
        pi = min(timeit.repeat(put_image, number=n // 4, repeat=3)) / (n // 4) * 1e6
        rows.append((mode, rt, pi))
    base_rt, base_pi = rows[0][1], rows[0][2]
    print(f"{'':10} {'round trip':>12} {'':>8} {'PutImage 40 KB':>15} {'':>8}")
    for mode, rt, pi in rows:
        print(f"{mode:10} {rt:9.1f} µs {rt / base_rt:7.1f}x {pi:12.1f} µs {pi / base_pi:7.1f}x")
    print("(per message: framing, decoding and one line into memory; the x's are to untraced)")


if __name__ == "__main__":
    main()
