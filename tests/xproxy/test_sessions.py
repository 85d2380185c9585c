"""Sessions around the move engine (xproxy/session/): the index by name, the headless Xvfb a
detached session lives on, a session holding its link agent, and the session process's
control socket (detach, attach, describe, a refused move) over a stand-in for the engine
that records where it was asked to move. The moves of real programs are in
test_session_moves.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require, start_xvfb
from xproxy.session import agent, headless, index
from xproxy.session.core import DETACHED, SessionError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runtime(tmp_path, monkeypatch) -> str:
    """A private runtime directory and Xauthority file, as a user of this host has."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "Xauthority"))
    return str(run)


def _until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_index_finds_a_live_session_by_name_or_display_and_drops_a_dead_one(
        runtime, tmp_path) -> None:
    import socket

    live = socket.socket(socket.AF_UNIX)
    live.bind(index.control_path("work"))
    live.listen()
    try:
        index.write(index.Entry("work", os.getpid(), ":23", index.control_path("work"), "/x"))
        index.write(index.Entry("gone", 1, ":24", index.control_path("gone"), "/x"))
        assert index.find("work") == index.read("work")
        assert index.find(":23") == index.find("unix:23.0") == index.read("work")
        assert [e.name for e in index.entries()] == ["work"]
        assert index.read("gone") is None  # its control socket did not answer: removed
        assert index.find("nothing") is None and index.find(":99") is None
        with pytest.raises(SessionError):
            index.find("../etc")
    finally:
        live.close()


def _xdpyinfo(display: str, xauthority: str) -> str:
    r = subprocess.run(["xdpyinfo"], env=dict(os.environ, DISPLAY=display,
                                              XAUTHORITY=xauthority),
                       capture_output=True, text=True, check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_headless_display_has_the_screen_asked_for_and_a_cookie_only_while_it_runs(
        runtime, tmp_path) -> None:
    require("Xvfb")
    require("xdpyinfo")
    xauthority = str(tmp_path / "Xauthority")
    screen = headless.start(640, 480, 16, xauthority)
    try:
        info = _xdpyinfo(screen.display, xauthority)
        assert "dimensions:    640x480 pixels" in info and "depth of root window:    16" in info
        other = subprocess.run(["xdpyinfo"], env=dict(os.environ, DISPLAY=screen.display,
                                                      XAUTHORITY=str(tmp_path / "none")),
                               capture_output=True, text=True, check=False, timeout=30)
        assert other.returncode != 0  # no cookie, no display
    finally:
        screen.stop()
    assert screen.process.poll() is not None
    from xproxy.trust.xauthfile import read_entries

    assert all(e.number != str(screen.number).encode() for e in read_entries(xauthority))


class StandIn(agent.Movable):
    """The engine as the session process sees it: a display, a describe reply, and moves that
    succeed (recorded) unless `refuse` is set."""

    def __init__(self) -> None:
        super().__init__(log=open(os.devnull, "w"))  # noqa: SIM115
        self.moves: list[str] = []
        self.refuse: str | None = None

    def start(self, upstream: agent.Upstream) -> str:
        self.display = ":77"
        self.moves.append(upstream.engine_target)
        return self.display

    def alive(self) -> bool:
        return True

    def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        if obj["op"] == "count":
            return {"ok": True, "clients": 1}
        if obj["op"] == "describe":
            return {"ok": True, "display": self.display, "target": self.moves[-1],
                    "since": 1.0, "geometry": [640, 480], "depth": 16,
                    "clients": [{"id": 3, "wm_class": "xclock\0XClock", "pid": None,
                                 "name": "client 3"}]}
        assert obj["op"] == "move"
        if self.refuse:
            return {"ok": False, "error": self.refuse}
        self.moves.append(obj["to"])
        return {"ok": True, "clients": 1, "seconds": 0.01}

    def stop(self) -> None:
        pass


@pytest.fixture
def screens():
    """Two displays for the session to be shown on (the stand-in engine draws nothing)."""
    require("Xvfb")
    first, second = start_xvfb(), start_xvfb()
    yield first.name, second.name
    first.stop()
    second.stop()


@pytest.fixture
def session(runtime, screens):
    s = agent.SessionAgent("work")
    s.movable = StandIn()
    s.start(screens[0])
    watcher = threading.Thread(target=s.watch, daemon=True)
    watcher.start()
    try:
        yield s
    finally:
        s.stopping.set()
        watcher.join(10)
        s.close()


def _ask(s: agent.SessionAgent, **req: Any) -> dict[str, Any]:
    return agent.ask(index.control_path(s.name), req, 60)


def test_detach_starts_a_headless_display_of_the_sessions_screen_and_attach_stops_it(
        session, screens) -> None:
    first, second = screens
    engine: StandIn = session.movable  # type: ignore[assignment]
    assert _ask(session, op="attach", to=second) == {
        "ok": False, "error": f"session work is not detached (it is shown on {first}; "
                              "`xproxy move` moves it)"}
    reply = _ask(session, op="detach")
    assert reply["ok"] and reply["to"] == DETACHED, reply
    headless_display = engine.moves[-1]
    info = _xdpyinfo(headless_display, session.xauthority)
    assert "dimensions:    640x480 pixels" in info and "depth of root window:    16" in info
    described = _ask(session, op="describe")
    assert described["detached"] and described["shown_on"] == DETACHED
    assert _ask(session, op="detach")["error"] == "session work is already detached"
    screen = session.upstream.headless
    assert screen is not None and screen.process.poll() is None

    engine.refuse = "a 16-bit target"  # a refused attach keeps the session where it was
    assert _ask(session, op="attach", to=second) == {"ok": False, "error": "a 16-bit target"}
    assert screen.process.poll() is None and session.upstream.headless is screen

    engine.refuse = None
    reply = _ask(session, op="attach", to=second)
    assert reply["ok"] and reply["to"] == second and engine.moves[-1] == second
    _until(lambda: screen.process.poll() is not None, "the headless Xvfb outlived the attach")
    described = _ask(session, op="describe")
    assert not described["detached"] and described["shown_on"] == second


def test_sessions_lists_the_session_with_its_clients(session, runtime, screens) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "xproxy.cli", "sessions", "--json"], env=env,
                       cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    [listed] = json.loads(r.stdout)
    assert listed["name"] == "work" and listed["display"] == ":77"
    assert listed["shown_on"] == screens[0] and not listed["detached"]
    assert [c["program"] for c in listed["clients"]] == ["XClock"]
    r = subprocess.run([sys.executable, "-m", "xproxy.cli", "sessions"], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.stdout.startswith(f"work             :77    on {screens[0]} since "), r.stdout
    assert r.stdout.rstrip().endswith("1 client: XClock")


def test_bad_requests_on_the_control_socket_are_answered_and_the_session_serves_on(
        session) -> None:
    import socket

    for garbage in (b"\x00\xff\n", b'{"op": "move", "to": "nowhere"}\n', b"x" * 70000):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(index.control_path("work"))
            s.sendall(garbage)
            reply = s.makefile("rb").readline()
            assert json.loads(reply)["ok"] is False, reply
    assert _ask(session, op="describe")["ok"]


def test_a_session_holds_its_link_agent_past_the_agents_linger(monkeypatch, tmp_path) -> None:
    """A hold gives the session a display of its own relaying to the link, and keeps the
    agent (whose linger is 0.5 s here) up while no X client is on it; letting go lets it
    linger out."""
    require("Xvfb")
    with WanLab(delay_ms=0) as lab:
        for key in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
            monkeypatch.setenv(key, lab.app_env[key])
        xauthority = str(tmp_path / "Xauthority")
        monkeypatch.setenv("XAUTHORITY", xauthority)
        up = agent.open_upstream(lab.target, linger=0.5)
        try:
            assert up.engine_target.startswith("/tmp/.X11-unix/X") and \
                os.path.exists(up.engine_target)
            ctl = up.hold.getpeername()
            with open(ctl[: -len(".ctl")] + ".pid") as f:
                pid = int(f.read())
            time.sleep(2)  # four times the agent's linger
            assert _running(pid), "the agent lingered out under a hold"
            display = ":" + up.engine_target.rpartition("/tmp/.X11-unix/X")[2]
            r = subprocess.run(["xdpyinfo"],
                               env=dict(lab.app_env, DISPLAY=display, XAUTHORITY=xauthority),
                               capture_output=True, text=True, check=False, timeout=30)
            import socket

            with socket.socket(socket.AF_UNIX) as s:  # a hold takes no further request
                s.settimeout(10)
                s.connect(ctl)
                s.sendall(b'{"op": "hold", "xauthority": "%s"}\n' % xauthority.encode())
                replies = s.makefile("rb")
                assert json.loads(replies.readline())["socket"].startswith("/tmp/.X11-unix/X")
                s.sendall(b'{"op": "display"}\n')
                assert json.loads(replies.readline()) == {
                    "ok": False, "error": "unexpected request while holding"}
        finally:
            up.close()
        _until(lambda: not _running(pid), "the agent did not linger out")
        assert r.returncode == 0 and "MIT-SHM" not in r.stdout, r.stderr


def _running(pid: int) -> bool:
    """Whether `pid` runs (this test started the agent: once it exits it is our zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_the_session_commands_and_the_session_process_import_no_twisted() -> None:
    """`run --session`, `move`, `sessions` and the session process only steer the engine:
    no reactor to import (a quarter of a second) before a program starts."""
    code = ("import sys; from xproxy.cli import main, sessions; import xproxy.session.client, "
            "xproxy.session.agent; "
            "main.build_parser().parse_args(['run', '--session', 'x', '--to', ':1', '--', 'true']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'OpenSSL', 'cryptography', 'zope')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    assert out.strip() == "[]"
