"""`xproxy serve` in front of a real Xvfb, used by real X programs."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time

import pytest

from testing import x11wire as wire
from testing.xserver import Xvfb, require, start_xvfb
from xproxy.trust import xauthfile
from xproxy.x11.xauth import FAMILY_LOCAL, MIT_MAGIC_COOKIE_1, XauthEntry

pytestmark = pytest.mark.timeout(120)


def run(args, env, timeout=30, check=False, **kw):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                          check=check, **kw)


def proxy_cookie(proxy) -> bytes:
    entries = xauthfile.read_entries(proxy.env["XAUTHORITY"])
    return next(e.data for e in entries if e.number == str(proxy.number).encode())


def normalise_xdpyinfo(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line.startswith(("name of display:", "number of extensions:")):
            continue
        if line.strip() == "MIT-SHM":
            continue
        lines.append(line)
    return lines


def test_xdpyinfo_through_the_proxy_matches_direct_but_for_name_and_mit_shm(xvfb, start_proxy):
    require("xdpyinfo")
    proxy = start_proxy()
    direct = run(["xdpyinfo"], xvfb.env)
    proxied = run(["xdpyinfo"], proxy.env)
    assert proxied.returncode == 0, proxied.stderr
    assert "MIT-SHM" in direct.stdout and "MIT-SHM" not in proxied.stdout
    assert f"name of display:    {proxy.display}" in proxied.stdout
    n_direct = int(re.search(r"number of extensions:\s+(\d+)", direct.stdout).group(1))
    n_proxied = int(re.search(r"number of extensions:\s+(\d+)", proxied.stdout).group(1))
    assert n_proxied == n_direct - 1
    assert normalise_xdpyinfo(proxied.stdout) == normalise_xdpyinfo(direct.stdout)


def test_hide_and_allow_extensions(xvfb, start_proxy):
    proxy = start_proxy("--hide-ext", "XTEST", "--allow-ext", "MIT-SHM")
    out = run(["xdpyinfo", "-queryExtensions"], proxy.env).stdout
    assert "MIT-SHM" in out and "XTEST" not in out and "RENDER" in out


def test_xlogo_maps_a_window_on_the_real_display(xvfb, start_proxy):
    require("xlogo")
    require("xdotool")
    proxy = start_proxy()
    logo = subprocess.Popen(["xlogo", "-name", "xproxy-test-logo"], env=proxy.env,
                            stderr=subprocess.PIPE)
    try:
        found = run(["xdotool", "search", "--sync", "--onlyvisible", "--classname", "xproxy-test-logo"],
                    xvfb.env, timeout=20)
        assert found.returncode == 0 and found.stdout.strip(), found.stderr
        geometry = run(["xwininfo", "-id", found.stdout.split()[0]], xvfb.env).stdout
        assert "Map State: IsViewable" in geometry
    finally:
        logo.terminate()
        logo.wait(10)


def test_x11perf_runs_through_the_proxy(start_proxy):
    require("x11perf")
    proxy = start_proxy()
    result = run(["x11perf", "-repeat", "1", "-time", "1", "-prop", "-rect10", "-putimage10"],
                 proxy.env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"reps @", result.stdout)) == 3


def test_no_cookie_and_wrong_cookie_are_refused(start_proxy, tmp_path):
    proxy = start_proxy()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    no_cookie = run(["xdpyinfo"], dict(proxy.env, XAUTHORITY=str(empty)))
    assert no_cookie.returncode != 0
    assert "No authorization protocol specified" in no_cookie.stderr
    wrong = str(tmp_path / "wrong")
    entry = XauthEntry(FAMILY_LOCAL, socket.gethostname().encode(), str(proxy.number).encode(),
                       MIT_MAGIC_COOKIE_1, secrets.token_bytes(16))
    xauthfile.update(wrong, lambda entries: [entry])
    bad = run(["xdpyinfo"], dict(proxy.env, XAUTHORITY=wrong))
    assert bad.returncode != 0
    assert "Invalid MIT-MAGIC-COOKIE-1 key" in bad.stderr
    assert run(["xdpyinfo"], proxy.env).returncode == 0
    assert proxy.log().count("refused") == 2


def test_real_cookie_never_reaches_the_client(xvfb, start_proxy):
    proxy = start_proxy()
    assert proxy_cookie(proxy) != xvfb.cookie
    sock = raw_connect(proxy, "<")
    reply = sock.recv(65536)
    assert reply[0] == 1 and xvfb.cookie not in reply
    sock.close()


def raw_connect(proxy, e: str, cookie: bytes | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(f"/tmp/.X11-unix/X{proxy.number}")
    sock.sendall(wire.setup_request(e, wire.MIT, cookie or proxy_cookie(proxy)))
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_setup_reply(sock: socket.socket, e: str) -> bytes:
    head = recv_exactly(sock, 8)
    (words,) = struct.unpack_from(e + "H", head, 6)
    return head + recv_exactly(sock, 4 * words)


@pytest.mark.parametrize("e", ["<", ">"], ids=["lsb", "msb"])
def test_raw_client_in_either_byte_order(start_proxy, e):
    proxy = start_proxy()
    sock = raw_connect(proxy, e)
    setup = read_setup_reply(sock, e)
    assert setup[0] == 1
    name = b"XPROXY_RAW_TEST"
    intern = wire.request(e, 16, 0, struct.pack(e + "H2x", len(name)) + name)
    sock.sendall(wire.request(e, 127) + intern + wire.query_extension(e, b"MIT-SHM"))
    atom_reply = recv_exactly(sock, 32)
    kind, _, seq, length, atom = struct.unpack_from(e + "BBHII", atom_reply)
    assert (kind, seq, length) == (1, 2, 0) and atom > 68
    shm = recv_exactly(sock, 32)
    assert struct.unpack_from(e + "BBHIB", shm) == (1, 0, 3, 0, 0)
    sock.close()


def test_twenty_clients_at_once(start_proxy):
    from Xlib import display as xdisplay

    proxy = start_proxy()
    old = dict(os.environ)
    os.environ["XAUTHORITY"] = proxy.env["XAUTHORITY"]
    try:
        clients = [xdisplay.Display(proxy.display) for _ in range(20)]
        atoms = {d.intern_atom(f"XPROXY_CLIENT_{i}") for i, d in enumerate(clients)}
        geometry = {d.screen().root.get_geometry().width for d in clients}
        for d in clients:
            d.close()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert len(atoms) == 20 and len(geometry) == 1


@pytest.mark.parametrize(
    "garbage",
    [b"\xff" * 64, b"GET / HTTP/1.0\r\n\r\n", "setup+zero-length", "setup+truncated"],
)
def test_garbage_from_one_client_leaves_the_others_working(start_proxy, garbage):
    from Xlib import display as xdisplay

    proxy = start_proxy()
    os.environ["XAUTHORITY"] = proxy.env["XAUTHORITY"]
    good = xdisplay.Display(proxy.display)
    before = good.intern_atom("XPROXY_BEFORE")
    bad = socket.socket(socket.AF_UNIX)
    bad.settimeout(10)
    bad.connect(f"/tmp/.X11-unix/X{proxy.number}")
    if garbage == "setup+zero-length":
        bad.sendall(wire.setup_request("<", wire.MIT, proxy_cookie(proxy)))
        read_setup_reply(bad, "<")
        bad.sendall(struct.pack("<BBHI", 72, 0, 0, 1000) + b"\0" * 64)
    elif garbage == "setup+truncated":
        bad.sendall(wire.setup_request("<", wire.MIT, proxy_cookie(proxy))[:10])
        bad.shutdown(socket.SHUT_WR)
    else:
        bad.sendall(garbage)
    rest = b""
    while chunk := bad.recv(65536):
        rest += chunk
    bad.close()
    assert good.intern_atom("XPROXY_AFTER") > 0 and good.intern_atom("XPROXY_BEFORE") == before
    good.close()
    assert proxy.process.poll() is None
    if garbage != "setup+truncated":
        assert "protocol error from client" in proxy.log()


def test_sigterm_leaves_no_socket_and_no_cookie(start_proxy, xvfb):
    proxy = start_proxy()
    number = proxy.number
    assert os.path.exists(f"/tmp/.X11-unix/X{number}") and os.path.exists(f"/tmp/.X{number}-lock")
    entries_before = xauthfile.read_entries(proxy.env["XAUTHORITY"])
    assert any(e.number == str(number).encode() for e in entries_before)
    assert proxy.stop(signal.SIGTERM) == 0, proxy.log()
    assert not os.path.exists(f"/tmp/.X11-unix/X{number}")
    assert not os.path.exists(f"/tmp/.X{number}-lock")
    entries_after = xauthfile.read_entries(proxy.env["XAUTHORITY"])
    assert not any(e.number == str(number).encode() for e in entries_after)
    assert len(entries_after) == len(entries_before) - 1
    assert "stopped" in proxy.log()


def test_sigint_stops_cleanly_too(start_proxy):
    proxy = start_proxy()
    assert proxy.stop(signal.SIGINT) == 0, proxy.log()
    assert not os.path.exists(f"/tmp/.X11-unix/X{proxy.number}")


def test_a_taken_display_is_refused_with_a_clear_message(start_proxy, xvfb):
    proxy = start_proxy("--display", str(xvfb.display), expect_ready=False)
    assert proxy.process.wait(15) == 1
    assert f"display :{xvfb.display} is in use" in proxy.log()


def test_a_stale_display_is_cleaned_up(start_proxy):
    number = 4242
    with open(f"/tmp/.X{number}-lock", "w") as f:
        f.write(f"{999_999_999:10d}\n")
    os.makedirs("/tmp/.X11-unix", exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    path = f"/tmp/.X11-unix/X{number}"
    if os.path.exists(path):
        os.unlink(path)
    stale.bind(path)
    stale.close()  # a socket file nobody listens on
    proxy = start_proxy("--display", str(number))
    assert proxy.display == f":{number}"
    assert run(["xdpyinfo"], proxy.env).returncode == 0


def test_tcp_listener(start_proxy):
    proxy = start_proxy("--tcp")
    env = dict(proxy.env, DISPLAY=f"localhost:{proxy.number}")
    result = run(["xdpyinfo"], env)
    assert result.returncode == 0, result.stderr


def test_untrusted_cookie_from_the_security_extension(start_proxy, xvfb):
    proxy = start_proxy("--untrusted")
    result = run(["xdpyinfo", "-queryExtensions"], proxy.env)
    assert result.returncode == 0, result.stderr + proxy.log()
    # an untrusted client sees only the extensions the SECURITY policy allows
    trusted = run(["xdpyinfo", "-queryExtensions"], xvfb.env).stdout
    assert "RECORD" in trusted and "RECORD" not in result.stdout


def test_unreachable_target_gets_a_setup_failure_with_the_reason(start_proxy):
    proxy = start_proxy(target=":4343")
    result = run(["xdpyinfo"], proxy.env)
    assert result.returncode != 0
    assert "cannot reach :4343" in result.stderr


def test_flood_then_disconnect_mid_request(start_proxy):
    """A client that dies halfway through a large PutImage leaves the proxy serving."""
    proxy = start_proxy()
    sock = raw_connect(proxy, "<")
    read_setup_reply(sock, "<")
    sock.sendall(wire.request("<", 72, 2, b"\0" * 200_000)[:150_000])
    sock.close()
    time.sleep(0.2)
    assert run(["xdpyinfo"], proxy.env).returncode == 0


def test_a_client_flooding_a_stopped_server_is_held_back(start_proxy, xvfb):
    """Backpressure: with the X server stopped, the proxy stops reading the flooding client
    once its buffers are full, instead of buffering the flood; all is delivered on SIGCONT."""
    proxy = start_proxy()
    sock = raw_connect(proxy, "<")
    read_setup_reply(sock, "<")
    noop = struct.pack("<BBH", 127, 0, 65535) + b"\0" * (65535 * 4 - 4)
    sock.setblocking(False)
    sent, pending, stalled_since = 0, memoryview(noop), None
    os.kill(xvfb.process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sent < 256 * 2**20:
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:] or memoryview(noop)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break
                time.sleep(0.01)
        assert stalled_since is not None, f"the proxy kept reading: {sent} bytes accepted"
        assert sent < 64 * 2**20
    finally:
        os.kill(xvfb.process.pid, signal.SIGCONT)
    sock.setblocking(True)
    sock.settimeout(30)
    sock.sendall(pending)
    sock.sendall(struct.pack("<BBH", 43, 0, 1))  # GetInputFocus
    reply = recv_exactly(sock, 32)
    assert reply[0] == 1
    sock.close()


LIST_EXTENSIONS = struct.pack("<BBH", 99, 0, 1)


def flood(sock: socket.socket, message: bytes, limit: int, seconds: float,
          quiet: float = 1.0) -> tuple[int, bool]:
    """Send `message` over and over without reading anything, until the proxy has taken
    nothing for `quiet` seconds (it stopped reading), or `limit` bytes or `seconds` have
    gone: (bytes sent, whether the proxy stopped reading)."""
    sock.setblocking(False)
    sent, pending, stalled_since = 0, memoryview(message), None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and sent < limit:
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:] or memoryview(message)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > quiet:
                    return sent, True
                time.sleep(0.01)
        return sent, False
    finally:
        sock.setblocking(True)


def test_a_client_that_never_reads_its_rewritten_replies_is_held_back(start_proxy):
    """ListExtensions replies are held and rewritten (MIT-SHM hidden): a client sending them
    without reading is not read either once its replies back up, and the proxy stays small
    (without the bound it grew by hundreds of MB in seconds)."""
    proxy = start_proxy()
    sock = raw_connect(proxy, "<")
    read_setup_reply(sock, "<")
    base = proxy.rss()
    sent, stalled = flood(sock, LIST_EXTENSIONS * 4096, limit=256 * 2**20, seconds=10)
    grown = proxy.rss() - base
    assert stalled, f"the proxy kept reading: {sent} bytes taken, RSS +{grown >> 20} MB"
    assert grown < 60 * 2**20, f"RSS +{grown >> 20} MB"
    sock.close()
    assert run(["xdpyinfo"], proxy.env).returncode == 0


def test_a_client_that_reads_its_rewritten_replies_slowly_is_held_back(start_proxy):
    """A client that sends ListExtensions fast and reads its replies slowly keeps the
    socket windows moving, so they alone do not stop it: the proxy stops reading it while
    more than --max-held replies it rewrites are awaited (without that, +150 MB in 8 s)."""
    proxy = start_proxy()
    sock = raw_connect(proxy, "<")
    read_setup_reply(sock, "<")
    base = proxy.rss()
    sock.setblocking(False)
    message = LIST_EXTENSIONS * 16384
    pending, received = memoryview(message), 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        try:
            pending = pending[sock.send(pending):] or memoryview(message)
        except BlockingIOError:
            pass
        try:
            received += len(sock.recv(65536))
        except BlockingIOError:
            pass
        time.sleep(0.002)
    grown = proxy.rss() - base
    sock.close()
    assert received > 0
    assert grown < 50 * 2**20, f"RSS +{grown >> 20} MB"


def test_a_closed_connection_leaves_no_memory_behind_without_the_cycle_collector(start_proxy):
    """Run with Python's cycle collector off, so what a connection left in reference cycles
    would stay: twenty clients in turn, each filling what the proxy keeps for it (replies
    it rewrites, never read) and closing, leave the proxy near where it started (each left
    about 5 MB behind when the connection's objects made cycles)."""
    proxy = start_proxy(gc_off=True)
    assert run(["xdpyinfo"], proxy.env).returncode == 0
    base = proxy.rss()
    for _ in range(20):
        sock = raw_connect(proxy, "<")
        read_setup_reply(sock, "<")
        flood(sock, LIST_EXTENSIONS * 4096, limit=8 * 2**20, seconds=5, quiet=0.3)
        sock.close()
        assert proxy.process.poll() is None
    deadline = time.monotonic() + 10
    while (grown := proxy.rss() - base) >= 50 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert grown < 50 * 2**20, f"RSS +{grown >> 20} MB after 20 clients came and went"
    assert run(["xdpyinfo"], proxy.env).returncode == 0


def test_unauthenticated_connections_do_not_use_up_the_real_server(start_proxy, xvfb):
    """300 connections that send nothing or half a setup: the proxy connects upstream only
    for a client whose cookie passed, caps unfinished setups (and says so), and the real
    display keeps serving its own clients (it allows 256 at a time)."""
    require("xdpyinfo")
    proxy = start_proxy("--max-setups", "64")
    half = wire.setup_request("<", wire.MIT, proxy_cookie(proxy))[:20]
    idle = []
    try:
        for i in range(300):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            while True:
                try:
                    sock.connect(f"/tmp/.X11-unix/X{proxy.number}")
                    break
                except BlockingIOError:  # the listen backlog is full for a moment
                    time.sleep(0.01)
            if i % 2:
                sock.sendall(half)
            idle.append(sock)
        deadline = time.monotonic() + 10
        while "have not completed their setup" not in proxy.log():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        direct = run(["xdpyinfo"], xvfb.env)
        assert direct.returncode == 0, direct.stderr
        assert "have not completed their setup" in proxy.log()
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 20
    while (proxied := run(["xdpyinfo"], proxy.env)).returncode != 0:
        assert time.monotonic() < deadline, proxied.stderr
        time.sleep(0.2)


def test_a_setup_not_completed_in_time_is_closed(start_proxy):
    proxy = start_proxy("--setup-timeout", "1")
    cookie = proxy_cookie(proxy)
    silent = socket.socket(socket.AF_UNIX)
    half = socket.socket(socket.AF_UNIX)
    for sock in (silent, half):
        sock.settimeout(20)
        sock.connect(f"/tmp/.X11-unix/X{proxy.number}")
    half.sendall(wire.setup_request("<", wire.MIT, cookie)[:20])
    good = raw_connect(proxy, "<")
    read_setup_reply(good, "<")
    assert silent.recv(100) == b"" and half.recv(100) == b""  # closed by the proxy
    good.sendall(struct.pack("<BBH", 43, 0, 1))  # GetInputFocus, after the timeout
    assert recv_exactly(good, 32)[0] == 1
    for sock in (silent, half, good):
        sock.close()
    assert "no setup within 1 s" in proxy.log()


def test_an_x_server_restarted_with_a_new_cookie_is_reached(start_proxy, xauthority):
    """The upstream cookie is looked up again for each client, as Xlib would: an X server
    restarted with a new cookie (written to the Xauthority file, as a display manager does)
    is reached through the proxy that was already running."""
    require("xdpyinfo")

    def add_cookie(server: Xvfb) -> None:
        subprocess.run(["xauth", "-f", xauthority, "add", server.name, "MIT-MAGIC-COOKIE-1",
                        server.cookie.hex()], check=True, capture_output=True)

    first = start_xvfb()
    second = None
    try:
        add_cookie(first)
        proxy = start_proxy(target=first.name)
        before = run(["xdpyinfo"], proxy.env)
        assert before.returncode == 0, before.stderr
        first.stop()
        second = start_xvfb(display=first.display)
        assert second.cookie != first.cookie
        add_cookie(second)
        after = run(["xdpyinfo"], proxy.env)
        assert after.returncode == 0, after.stderr + proxy.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()
