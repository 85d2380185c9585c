"""`xproxy export` against peers that connect and never finish their TLS handshake."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import XPROXY

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def export(xvfb, tmp_path):
    started = []

    def start(*args: str) -> tuple[subprocess.Popen, int, str]:
        log = str(tmp_path / f"export-{len(started)}.log")
        env = dict(xvfb.env, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
        with open(log, "w") as err:
            p = subprocess.Popen(
                [*XPROXY, "export", xvfb.name, "--name", "limits", "--port", "0",
                 "--interface", "127.0.0.1", "--no-advertise", *args],
                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        started.append(p)
        line = p.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ready"), Path(log).read_text()
        return p, int(line.split("port=")[1].split()[0]), log

    yield start
    for p in started:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def connect(port: int) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=20)
        except (BlockingIOError, TimeoutError):
            time.sleep(0.01)


def answers_a_client_hello(port: int) -> bool:
    with connect(port) as sock:
        sock.sendall(client_hello())
        first = sock.recv(5)
    return first[:1] == b"\x16"  # a handshake record: the ServerHello


def test_half_open_tls_connections_cost_a_bounded_amount_of_memory(export):
    """400 connections at a time that stop halfway through their handshake (half a
    ClientHello, or a whole one and nothing after): at most --max-handshakes (64) are given
    TLS state, the rest are closed at once and the log says so; the export stays small
    (it grew by over 20 MB before) and still answers a real client."""
    process, port, log = export()
    assert answers_a_client_hello(port)
    base = rss(process.pid)
    hello = client_hello()
    for _ in range(2):
        socks = []
        for i in range(400):
            sock = connect(port)
            try:
                sock.sendall(hello if i % 2 else hello[: len(hello) // 2])
            except OSError:
                pass  # closed already: past the limit
            socks.append(sock)
        time.sleep(1)
        grown = rss(process.pid) - base
        for sock in socks:
            sock.close()
        assert grown < 10 * 2**20, f"RSS +{grown >> 20} MB with 400 half-open connections"
    with open(log) as f:
        assert "TLS handshakes unfinished (--max-handshakes)" in f.read()
    deadline = time.monotonic() + 30
    while not answers_a_client_hello(port):  # once the stalled ones are gone
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert rss(process.pid) - base < 10 * 2**20


def test_a_handshake_not_done_in_time_is_closed(export):
    """A peer that trickles its ClientHello a byte at a time is closed after
    --handshake-timeout, however long it keeps sending."""
    _, port, log = export("--handshake-timeout", "1")
    hello = client_hello()
    sock = connect(port)
    sock.settimeout(0.5)
    closed = False
    deadline = time.monotonic() + 12  # (the link's own 15 s silence timeout is not this)
    for byte in hello[:-1]:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(100) == b"":
                closed = True
                break
        except TimeoutError:
            pass
        except OSError:
            closed = True
            break
        if time.monotonic() > deadline:
            break
    sock.close()
    assert closed, "the export kept a handshake going for 12 s"
    with open(log) as f:
        assert "no TLS handshake within 1 s" in f.read()
