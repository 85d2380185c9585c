"""Sessions moving real programs: `run --session` on a local display, `sessions --json`,
detach then attach on another display, and a move over the link from one display host to
another (network namespaces as hosts, discoveryd on each, an export of a real Xvfb on each).
No timing is asserted (benchmarks/move.py measures)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time

import pytest

from testing import netns
from testing.xserver import Xvfb, require, start_xvfb
from xproxy.session.agent import ask

from .test_launcher import XPROXY, make_site, read_line

pytestmark = pytest.mark.timeout(240)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def two_displays(tmp_path):
    """Two Xvfb of one screen size, a few clients already on the second (so its resource
    bases differ), one Xauthority with both cookies, and a private runtime directory."""
    for program in ("Xvfb", "xdotool", "xwininfo", "xwd", "xlogo", "xclock"):
        require(program)
    a, b = start_xvfb(screen="1024x768x24"), start_xvfb(screen="1024x768x24")
    others: list[subprocess.Popen] = []
    env: dict[str, str] = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
    try:
        auth = str(tmp_path / "Xauthority")
        subprocess.run(["xauth", "-f", auth, "merge", a.xauthority, b.xauthority], check=True,
                       capture_output=True)
        run = tmp_path / "run"
        run.mkdir(mode=0o700)
        env = dict(os.environ, XAUTHORITY=auth, XDG_RUNTIME_DIR=str(run), PYTHONPATH=ROOT)
        env.pop("DISPLAY", None)
        a.extra_env = b.extra_env = {"XAUTHORITY": auth}
        others = [subprocess.Popen(["xlogo", "-name", "bystander"], env=b.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for _ in range(3)]
        yield a, b, env
    finally:
        _stop_sessions(env)
        for p in others:
            p.kill()
            p.wait()
        a.stop()
        b.stop()


def _stop_sessions(env: dict[str, str]) -> None:
    sessions = os.path.join(env["XDG_RUNTIME_DIR"], "xtransparency", "sessions")
    for file in os.listdir(sessions) if os.path.isdir(sessions) else []:
        if file.endswith(".ctl"):
            try:
                ask(os.path.join(sessions, file), {"op": "stop"}, 10)
            except Exception:  # noqa: BLE001, S112 - already gone
                continue


def xproxy(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*XPROXY, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def windows(env: dict[str, str], name: str) -> list[str]:
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--classname", name], env=env,
                           capture_output=True, text=True, check=False, timeout=30)
    return found.stdout.split()


def wait_window(env: dict[str, str], name: str, program: subprocess.Popen | None = None,
                timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (found := windows(env, name)):
        if program is not None:
            assert program.poll() is None, program.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"no {name} window on {env['DISPLAY']}"
        time.sleep(0.2)
    return found[0]


def wait_gone(env: dict[str, str], name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while windows(env, name):
        assert time.monotonic() < deadline, f"a {name} window stayed on {env['DISPLAY']}"
        time.sleep(0.2)


def size(env: dict[str, str], window: str) -> tuple[int, int]:
    info = subprocess.run(["xwininfo", "-id", window], env=env, capture_output=True, text=True,
                          check=True, timeout=30).stdout
    fields = dict(line.strip().split(":", 1) for line in info.splitlines() if ":" in line)
    assert fields["Map State"].strip() == "IsViewable", info
    return int(fields["Width"]), int(fields["Height"])


def pixels(env: dict[str, str], window: str) -> bytes:
    """The window's pixels as xwd reads them (the header, which names the window and its
    place, left out)."""
    raw = subprocess.run(["xwd", "-silent", "-id", window], env=env, capture_output=True,
                         check=True, timeout=30).stdout
    header_size, ncolors = struct.unpack_from(">I", raw, 0)[0], struct.unpack_from(">I", raw,
                                                                                   76)[0]
    return raw[header_size + 12 * ncolors:]


def settled_pixels(env: dict[str, str], window: str, timeout: float = 30) -> bytes:
    """The window's pixels once painted (not of one colour) and two reads a moment apart
    agree (after its repaint)."""
    deadline = time.monotonic() + timeout
    last = pixels(env, window)
    while True:
        time.sleep(0.3)
        now = pixels(env, window)
        if now == last and len(set(now)) > 1:
            return now
        assert time.monotonic() < deadline, "the window was not painted, or kept changing"
        last = now


def listed(env: dict[str, str]) -> list[dict]:
    r = xproxy(env, "sessions", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start(env: dict[str, str], session: str, target: str, *command: str) -> subprocess.Popen:
    return subprocess.Popen([*XPROXY, "run", "--session", session, "--to", target, "--",
                             *command], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop(program: subprocess.Popen) -> None:
    if program.poll() is None:
        program.send_signal(signal.SIGTERM)
        program.wait(30)


def test_run_session_on_a_local_display_and_sessions_lists_it(two_displays) -> None:
    a, b, env = two_displays
    logo = start(env, "local", a.name, "xlogo", "-name", "inlocal")
    clock = None
    try:
        wait_window(a.env, "inlocal", logo)
        clock = start(env, "local", a.name, "xclock", "-name", "alsolocal")
        wait_window(a.env, "alsolocal", clock)
        [session] = listed(env)
        assert session["name"] == "local" and session["shown_on"] == a.name
        assert not session["detached"] and isinstance(session["since"], (int, float))
        assert {"XLogo", "XClock"} <= {c["program"] for c in session["clients"]}, session
        assert xproxy(env, "sessions").stdout.startswith(f"local            {session['display']}")
        joined = xproxy(env, "run", "--session", "local", "--to", b.name, "--", "xdpyinfo")
        assert joined.returncode == 0, joined.stderr
        assert f"session local is shown on {a.name}; the program joins it there" in \
            joined.stderr
        assert f"name of display:    {session['display']}" in joined.stdout
        status = xproxy(env, "run", "--session", "local", "--to", a.name, "--", "sh", "-c",
                        "exit 7")
        assert status.returncode == 7, status.stderr
    finally:
        stop(logo)
        if clock is not None:
            stop(clock)
    deadline = time.monotonic() + 60  # unused, the session ends by itself
    while listed(env):
        assert time.monotonic() < deadline, "the session outlived its programs"
        time.sleep(0.5)


def test_runs_started_together_share_one_session(two_displays) -> None:
    a, _, env = two_displays
    runs = [subprocess.Popen([*XPROXY, "run", "--session", "together", "--to", a.name, "--",
                              "xdpyinfo"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(3)]
    names = set()
    for r in runs:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        names |= {line.split()[-1] for line in out.splitlines()
                  if line.startswith("name of display:")}
    [session] = listed(env)
    assert names == {session["display"]}


def test_detach_then_attach_elsewhere_keeps_the_program_running(two_displays) -> None:
    a, b, env = two_displays
    clock = start(env, "away", a.name, "xclock", "-name", "traveller", "-update", "1",
                  "-geometry", "210x190")
    logo = None
    try:
        window = wait_window(a.env, "traveller", clock)
        before = size(a.env, window)
        logo = start(env, "away", a.name, "xlogo", "-name", "still", "-geometry", "150x120+400+300")
        picture = settled_pixels(a.env, wait_window(a.env, "still", logo))

        r = xproxy(env, "detach", "away")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("detached away: 2 clients on a headless display"), r.stdout
        wait_gone(a.env, "traveller")
        wait_gone(a.env, "still")
        assert clock.poll() is None and logo.poll() is None
        [session] = listed(env)
        assert session["detached"] and session["shown_on"] == "(detached)"
        described = ask(os.path.join(env["XDG_RUNTIME_DIR"], "xtransparency", "sessions",
                                     "away.ctl"), {"op": "describe"}, 30)
        headless = described["target"]  # the engine's upstream: the session's own Xvfb
        assert os.path.exists(f"/tmp/.X11-unix/X{headless.lstrip(':')}")

        r = xproxy(env, "attach", "away", "--to", b.name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"moved 2 clients to {b.name} in "), r.stdout
        window = wait_window(b.env, "traveller", clock)
        assert size(b.env, window) == before
        assert settled_pixels(b.env, wait_window(b.env, "still", logo)) == picture
        assert clock.poll() is None and logo.poll() is None
        [session] = listed(env)
        assert not session["detached"] and session["shown_on"] == b.name
        deadline = time.monotonic() + 30
        while os.path.exists(f"/tmp/.X11-unix/X{headless.lstrip(':')}"):
            assert time.monotonic() < deadline, "the headless Xvfb outlived the attach"
            time.sleep(0.1)
    finally:
        stop(clock)
        if logo is not None:
            stop(logo)


def test_a_gtk3_program_detached_and_attached_elsewhere(two_displays) -> None:
    """GTK 3 (zenity) falls back to core X on a movable display and lives through both."""
    require("zenity")
    a, b, env = two_displays
    gtk = dict(env, NO_AT_BRIDGE="1", GDK_BACKEND="x11")
    dialog = start(gtk, "gtk", a.name, "zenity", "--info", "--text", "still here")
    try:
        window = wait_window(a.env, "zenity", dialog)
        before = size(a.env, window)
        r = xproxy(env, "detach", "gtk")
        assert r.returncode == 0, r.stderr
        wait_gone(a.env, "zenity")
        r = xproxy(env, "attach", "gtk", "--to", b.name)
        assert r.returncode == 0, r.stderr
        window = wait_window(b.env, "zenity", dialog)
        assert size(b.env, window) == before
        settled_pixels(b.env, window)  # painted again
        assert dialog.poll() is None
        [session] = listed(env)
        assert [c["program"] for c in session["clients"]] == ["Zenity"]
    finally:
        stop(dialog)


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """Display hosts office (h0) and home (h1), each an Xvfb and `xproxy export`, and the app
    host (h2), authorized on both."""
    if netns.available() is not None:
        pytest.skip(str(netns.available()))
    for program in ("Xvfb", "xdotool", "xlogo"):
        require(program)
    base = str(tmp_path_factory.mktemp("session-link"))
    screens: list[Xvfb] = [start_xvfb(), start_xvfb()]
    try:
        with netns.netns_lan(3, subnet="10.79.0") as hosts:
            app = make_site(hosts[2], base, "app")
            app_fp = app.xproxy("id").stdout.strip()
            exports = []
            for host, name, xvfb in zip(hosts, ("office", "home"), screens):
                site = make_site(host, base, name)
                with open(xvfb.xauthority, "rb") as src, \
                        open(site.env["XAUTHORITY"], "wb") as dst:
                    dst.write(src.read())
                site.env["DISPLAY"] = xvfb.name
                assert site.xproxy("authorize", app_fp, "--name", "app").returncode == 0
                export = site.popen([*XPROXY, "export", "--name", name],
                                    stdout=subprocess.PIPE,
                                    stderr=open(os.path.join(base, f"{name}.log"), "w"),  # noqa: SIM115
                                    text=True)
                read_line(export, "ready")
                exports.append(export)
            yield {"app": app, "office": screens[0], "home": screens[1]}
            _stop_sessions(app.env)
            for export in exports:
                export.send_signal(signal.SIGTERM)
                export.wait(15)
    finally:
        for xvfb in screens:
            xvfb.stop()


def test_move_over_the_link_from_one_display_host_to_another(two_hosts) -> None:
    app, office, home = two_hosts["app"], two_hosts["office"], two_hosts["home"]
    logo = app.popen([*XPROXY, "run", "--session", "roaming", "--to", "@office", "--",
                      "xlogo", "-name", "roamer"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
    try:
        window = wait_window(office.env, "roamer", logo)
        before = size(office.env, window)
        r = app.xproxy("move", "roaming", "--to", "@home", timeout=180)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("moved 1 client to @home in "), r.stdout
        window = wait_window(home.env, "roamer", logo)
        assert size(home.env, window) == before
        wait_gone(office.env, "roamer")
        assert logo.poll() is None
        [session] = json.loads(app.xproxy("sessions", "--json").stdout)
        assert session["shown_on"] == "@home"
        r = app.xproxy("detach", "roaming", timeout=180)  # off both, then back over the link
        assert r.returncode == 0, r.stderr
        wait_gone(home.env, "roamer")
        r = app.xproxy("attach", "roaming", "--to", "@office", timeout=180)
        assert r.returncode == 0, r.stderr
        window = wait_window(office.env, "roamer", logo)
        assert size(office.env, window) == before
        assert logo.poll() is None
    finally:
        if logo.poll() is None:
            logo.send_signal(signal.SIGTERM)
            logo.wait(30)


def test_a_move_to_nowhere_or_to_another_depth_changes_nothing(two_displays) -> None:
    a, _, env = two_displays
    r = xproxy(env, "run", "--session", "never", "--to", ":4321", "--", "true")
    assert r.returncode == 1 and "display :4321 does not answer" in r.stderr, r.stderr
    assert listed(env) == []
    logo = start(env, "stay", a.name, "xlogo", "-name", "stayer")
    shallow = start_xvfb(screen="1024x768x16")
    try:
        subprocess.run(["xauth", "-f", env["XAUTHORITY"], "merge", shallow.xauthority],
                       check=True, capture_output=True)
        wait_window(a.env, "stayer", logo)
        r = xproxy(env, "move", "stay", "--to", ":4321")
        assert r.returncode == 1 and "display :4321 does not answer" in r.stderr, r.stderr
        r = xproxy(env, "move", "stay", "--to", shallow.name)
        assert r.returncode == 1 and "session stay:" in r.stderr and "depth" in r.stderr, \
            r.stderr
        assert windows(a.env, "stayer") and logo.poll() is None
        [session] = listed(env)
        assert session["shown_on"] == a.name
        r = xproxy(env, "move", session["display"], "--to", ":4321")  # by its display
        assert r.returncode == 1 and "session stay:" in r.stderr, (r.stdout, r.stderr)
        assert windows(a.env, "stayer") and logo.poll() is None
        r = xproxy(env, "move", "nosuch", "--to", a.name)
        assert r.returncode == 1 and "no session nosuch" in r.stderr
        r = xproxy(env, "move", ":4322", "--to", "@home")  # no session: no link agent to hold
        assert r.returncode == 2 and "a move over the link needs a session" in r.stderr
    finally:
        stop(logo)
        shallow.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-x", "-q"]))
