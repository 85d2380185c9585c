"""X over a slow link, end to end on loopback: export, `run --to xproxy://...` through a delaying
relay, a real Xvfb and real X programs. Suppression keeps sequence numbers exact (a client that
checks every one), `--verify-cache` finds no mismatch on real programs, one flooding client does
not stop another on the same link, and what a link loss does. No timing is asserted here
(benchmarks/wan.py measures)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require

from .test_serve import normalise_xdpyinfo

pytestmark = pytest.mark.timeout(120)

SEQCHECK = [sys.executable, os.path.join(ROOT, "tests", "xproxy", "seqcheck_client.py")]


@pytest.fixture(scope="module")
def lab():
    require("Xvfb")
    with WanLab(delay_ms=1) as lab:
        yield lab


def result(run: subprocess.CompletedProcess) -> dict:
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_every_sequence_number_exact_with_answers_errors_and_events_interleaved(lab) -> None:
    direct = result(subprocess.run(SEQCHECK, env=lab.display_env, capture_output=True,
                                   text=True, timeout=60, check=False))
    assert direct["ok"], direct
    first = result(lab.run(SEQCHECK))  # learns atoms, extension, colours
    second = result(lab.run(SEQCHECK))  # answered from the cache
    for r in (first, second):
        assert r["ok"], r
        assert (r["replies"], r["errors"], r["events"]) == \
            (direct["replies"], direct["errors"], direct["events"])
    stats = lab.agent_stats()
    assert stats["answered"] > 0 and stats["held"] > 0  # both paths were taken
    assert stats["mismatches"] == 0, stats["mismatch_log"]


BIGREQ = [sys.executable, os.path.join(ROOT, "tests", "xproxy", "bigreq_client.py")]


def test_a_big_request_after_an_enable_answered_from_the_cache(lab) -> None:
    """The agent answers QueryExtension("BIG-REQUESTS") and the Enable from its cache, so
    the Enable and a 1 MiB request reach the display host before the server's reply that
    names the extension's opcode (Qt 5 programs died of this)."""
    direct = result(subprocess.run(BIGREQ, env=lab.display_env, capture_output=True,
                                   text=True, timeout=60, check=False))
    assert direct["ok"], direct
    before = lab.agent_stats().get("answered", 0)
    for _ in range(2):  # the first run may fill the cache; the second is answered from it
        r = result(lab.run(BIGREQ))
        assert r == direct
    assert lab.agent_stats()["answered"] >= before + 2


QT = {"QT_QPA_PLATFORM": "xcb", "NO_AT_BRIDGE": "1"}


def _window(lab, cls: str, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--class", cls],
                               env=lab.display_env, capture_output=True, text=True, check=False)
        if found.returncode == 0:
            return found.stdout.split()[0]
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"no {cls} window"
        time.sleep(0.2)


def _type(lab, window: str, *keys: str) -> None:
    subprocess.run(["xdotool", "windowfocus", "--sync", window, *keys], env=lab.display_env,
                   check=True, capture_output=True, timeout=30)


def _until(check, what: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.parametrize("program", ["featherpad", "qterminal"])
def test_qt_programs_live_and_take_typed_text_with_a_warm_cache(lab, tmp_path, program) -> None:
    """Qt 5 sends requests over 256 KiB (MIT-SHM being hidden) right after its BIG-REQUESTS
    Enable; with the Enable answered from the cache that killed it."""
    require(program)
    require("xdotool")
    for attempt in range(2):  # the first run fills the cache, the second is answered from it
        out = tmp_path / f"{program}-{attempt}.txt"
        out.write_text("")
        argv = ([program, "--standalone", str(out)] if program == "featherpad"
                else [program, "--workdir", str(tmp_path)])
        process = subprocess.Popen(lab.run_argv(argv), env={**lab.app_env, **QT}, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            window = _window(lab, program, process)
            if program == "featherpad":
                _until(lambda window=window: _focusable(lab, window), "featherpad took no focus",
                       process)
                _type(lab, window, "type", "--delay", "20", "typed over the link")
                _type(lab, window, "key", "ctrl+s")
            else:
                _until(lambda window=window: _focusable(lab, window), "qterminal took no focus",
                       process)
                _type(lab, window, "type", "--delay", "20", f"echo typed over the link > {out}\n")
            _until(lambda out=out: out.read_text().strip() == "typed over the link",
                   f"{program} did not take the typed text", process)
            assert process.poll() is None
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    stats = lab.agent_stats()
    assert stats["answered"] > 0 and stats["mismatches"] == 0, stats


def _focusable(lab, window: str) -> bool:
    return subprocess.run(["xdotool", "windowfocus", "--sync", window], env=lab.display_env,
                          capture_output=True, timeout=30, check=False).returncode == 0


def _programs() -> list[tuple[str, list[str]]]:
    return [
        ("xdpyinfo", ["xdpyinfo"]),
        ("xterm", ["xterm", "-e", "true"]),
        ("xlogo", ["sh", "-c", "xlogo & p=$!; sleep 1.5; kill $p"]),
        ("x11perf", ["x11perf", "-repeat", "1", "-time", "1", "-prop"]),
    ]


def _without_display_name(xdpyinfo: str) -> list[str]:
    return [line for line in xdpyinfo.splitlines() if not line.startswith("name of display:")]


def test_verify_cache_on_real_programs_finds_no_mismatch(lab) -> None:
    for prog in ("xdpyinfo", "xterm", "xlogo", "x11perf"):
        require(prog)
    outputs = {}
    for name, argv in _programs():  # fills the display host's cache
        r = lab.run(argv)
        assert r.returncode == 0, (name, r.stderr[-1000:])
        outputs[name] = r.stdout
    for name, argv in _programs():  # every known answer compared with the server's
        r = lab.run(argv, "--verify-cache")
        assert r.returncode == 0, (name, r.stderr[-1000:])
        assert re.search(r"verify-cache: \d+ answers compared with the server's, 0 mismatches",
                         r.stderr), r.stderr[-1000:]
        if name == "xdpyinfo":  # the same answers; the display's number is the agent's own
            assert _without_display_name(r.stdout) == _without_display_name(outputs[name])
    stats = lab.agent_stats("--verify-cache")
    assert stats["compared"] > 200, stats  # xterm alone has 212 AllocColor
    assert stats["mismatches"] == 0, stats["mismatch_log"]
    normal = lab.agent_stats()
    assert normal["mismatches"] == 0, normal["mismatch_log"]
    assert normal["link_wire_in"] < normal["link_raw_in"]  # compression did something


def test_xdpyinfo_same_through_suppression_as_direct(lab) -> None:
    direct = subprocess.run(["xdpyinfo"], env=lab.display_env, capture_output=True, text=True,
                            timeout=30, check=True).stdout
    lab.run(["xdpyinfo"])
    via = lab.run(["xdpyinfo"])
    assert via.returncode == 0
    assert normalise_xdpyinfo(via.stdout) == normalise_xdpyinfo(direct)


FLOOD = r"""
import os, socket, struct, sys, time
sys.path.insert(0, %r)
from xproxy.trust import xauthfile
from xproxy.x11.display import parse_display
d = parse_display(os.environ["DISPLAY"]); e = xauthfile.lookup_for_display(d)
s = socket.socket(socket.AF_UNIX); s.connect(d.socket_path)
pad = lambda b: b + b"\0" * (-len(b) %% 4)
s.sendall(struct.pack("<BxHHHH2x", 0x6C, 11, 0, len(e.name), len(e.data)) + pad(e.name) + pad(e.data))
head = s.recv(8, socket.MSG_WAITALL); setup = head + s.recv(4 * struct.unpack_from("<H", head, 6)[0], socket.MSG_WAITALL)
vl, = struct.unpack_from("<H", setup, 24); root, = struct.unpack_from("<I", setup, 40 + vl + (-vl %% 4) + 8 * setup[29])
# GetImage of 400x400 of the root, 100 times, never reading the 64 MB of replies
req = struct.pack("<BBHIhhHHI", 73, 2, 5, root, 0, 0, 400, 400, 0xFFFFFFFF)
s.setblocking(False)
sent = 0
for _ in range(100):
    try:
        s.send(req); sent += 1
    except BlockingIOError:
        break
print("flooding", sent, flush=True)
time.sleep(60)
"""


def test_a_flooding_client_does_not_stop_another_on_the_same_link(lab, tmp_path) -> None:
    script = tmp_path / "flood.py"
    script.write_text(FLOOD % ROOT)
    flood = subprocess.Popen(lab.run_argv([sys.executable, str(script)]), env=lab.app_env,
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = flood.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("flooding"), flood.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.5)  # replies pile up: the flooder's channel window is spent
        r = lab.run(["xdpyinfo"], timeout=60)  # the same agent, the same link
        assert r.returncode == 0, r.stderr[-1000:]
        assert "number of screens" in r.stdout
    finally:
        flood.send_signal(signal.SIGTERM)
        flood.wait(10)


def test_a_link_loss_is_survived_and_the_cache_still_answers(lab) -> None:
    """A dropped link connection is resumed (issue 7; tests/xproxy/test_reconnect.py has the
    details): the X client on it lives on, and the same link serves the next `run` with the
    display host's cache answering."""
    lab.run(["xdpyinfo"])  # the cache knows xdpyinfo's answers
    require("xdotool")
    long = subprocess.Popen(lab.run_argv(["xlogo"]), env=lab.app_env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["xdotool", "search", "--onlyvisible", "--class", "XLogo"],
                             env=lab.display_env, capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, "xlogo did not map"
            time.sleep(0.1)
        lab.link_relay.drop()
        with pytest.raises(subprocess.TimeoutExpired):
            long.wait(2)  # xlogo does not notice
        r = lab.run(["xdpyinfo"])
        assert r.returncode == 0, r.stderr[-1000:]
        assert long.poll() is None
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    r = lab.run(["xdpyinfo"])
    assert r.returncode == 0, r.stderr[-1000:]
    stats = lab.agent_stats()
    assert stats["answered"] > 0 and stats["mismatches"] == 0
