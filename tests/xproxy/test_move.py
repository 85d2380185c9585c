"""`xproxy serve --movable` and `xproxy move` with real Xvfb servers and real X programs.

Two Xvfb of the same geometry and depth, with different numbers of other clients already
connected (so a moved client's resource-id base differs on each), and a 16-bit one that a
move must refuse. A program shown through the movable display is moved and compared with the
same program shown directly on the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from testing.xvfb import start_xvfb
from xproxy.trust import xauthfile

pytestmark = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("Xvfb", "xlogo", "xclock", "xeyes", "xcalc",
                                          "xedit", "xterm", "xdotool")),
    reason="needs Xvfb, x11-apps, xterm and xdotool (make install)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XPROXY = [sys.executable, "-m", "xproxy.cli"]
SEQCHECK = os.path.join(ROOT, "tests", "xproxy", "seqcheck_client.py")
FLOOD = os.path.join(ROOT, "tests", "xproxy", "flood_client.py")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(A, B, C16, xauthority): A and B 1024x768x24 with 1 and 3 other clients connected,
    C16 at depth 16; one Xauthority file with all three cookies."""
    tmp = tmp_path_factory.mktemp("move")
    a, b, c = start_xvfb(), start_xvfb(), start_xvfb(screen="1024x768x16")
    auth = str(tmp / "Xauthority")
    shutil.copy(a.xauthority, auth)
    for server in (b, c):
        subprocess.run(["xauth", "-f", auth, "add", server.name, "MIT-MAGIC-COOKIE-1",
                        server.cookie.hex()], check=True)
    held = [xauthfile.open_xlib_display(a.name, auth)]
    held += [xauthfile.open_xlib_display(b.name, auth) for _ in range(3)]
    yield a, b, c, auth
    for d in held:
        d.close()
    for server in (a, b, c):
        server.stop()


class Movable:
    def __init__(self, process, display, env, log):
        self.process, self.display, self.env, self.log_path = process, display, env, log

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def move(self, target: str) -> subprocess.CompletedProcess:
        return subprocess.run([*XPROXY, "move", self.display, "--to", target], env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)

    def client_env(self) -> dict[str, str]:
        return dict(self.env, DISPLAY=self.display)


@pytest.fixture
def movable(servers, tmp_path):
    a, _b, _c, auth = servers
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XAUTHORITY=auth, XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=ROOT)
    log = str(tmp_path / "xproxy.log")
    with open(log, "w") as err:
        process = subprocess.Popen([*XPROXY, "serve", "--movable", "--to", a.name, "-v"], env=env,
                                   stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    line = process.stdout.readline().strip()
    proxy = Movable(process, line.partition("=")[2], env, log)
    assert line.startswith("ready DISPLAY=:"), proxy.log()
    started: list[subprocess.Popen] = []
    proxy.started = started
    yield proxy
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def spawn(proxy: Movable, args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    proxy.started.append(p)
    return p


def poll(check, timeout: float = 30.0, every: float = 0.1):
    """check() until it returns something true; that value (or AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        time.sleep(every)


def top_window(display: str, auth: str, title: str) -> int | None:
    """The id of the mapped top-level window titled `title` on `display`."""
    d = xauthfile.open_xlib_display(display, auth)
    try:
        for w in d.screen().root.query_tree().children:
            with contextlib.suppress(Exception):  # (a window that went away meanwhile)
                if w.get_wm_name() == title and w.get_attributes().map_state == 2:
                    return w.id
        return None
    finally:
        d.close()


def window_image(display: str, auth: str, wid: int) -> tuple[int, int, bytes]:
    from Xlib import X

    d = xauthfile.open_xlib_display(display, auth)
    try:
        w = d.create_resource_object("window", wid)
        g = w.get_geometry()
        image = w.get_image(0, 0, g.width, g.height, X.ZPixmap, 0xFFFFFFFF)
        return g.width, g.height, bytes(image.data)
    finally:
        d.close()


def moved_ok(proxy: Movable, target: str) -> None:
    r = proxy.move(target)
    assert r.returncode == 0, (r.stderr, proxy.log())
    assert r.stdout.startswith("moved 1 clients to " + target), r.stdout


@pytest.mark.parametrize("program", [["xlogo"], ["xclock", "-norender"], ["xcalc"], ["xedit"]])
def test_program_moved_looks_as_when_shown_directly(servers, movable, program):
    a, b, _c, auth = servers
    name = program[0]
    spawn(movable, [*program, "-title", f"moved-{name}", "-geometry", "200x200+0+0"],
          movable.client_env())
    spawn(movable, [*program, "-title", f"direct-{name}", "-geometry", "200x200+400+0"],
          b.env | {"XAUTHORITY": auth})
    poll(lambda: top_window(a.name, auth, f"moved-{name}"))
    direct = poll(lambda: top_window(b.name, auth, f"direct-{name}"))
    moved_ok(movable, b.name)
    assert top_window(a.name, auth, f"moved-{name}") is None
    moved = poll(lambda: top_window(b.name, auth, f"moved-{name}"))
    # The same picture once repainted (xclock: within the same minute, so tried again).
    poll(lambda: window_image(b.name, auth, moved) == window_image(b.name, auth, direct),
         timeout=60)
    pixels = set(memoryview(window_image(b.name, auth, moved)[2]).cast("I"))
    assert len(pixels) > 1  # a picture, not an empty window


def test_xclock_still_ticks_after_the_move(servers, movable):
    a, b, _c, auth = servers
    spawn(movable, ["xclock", "-digital", "-update", "1", "-strftime", "%T", "-title",
                    "ticking", "-geometry", "200x40+0+300"], movable.client_env())
    poll(lambda: top_window(a.name, auth, "ticking"))
    moved_ok(movable, b.name)
    wid = poll(lambda: top_window(b.name, auth, "ticking"))
    first = window_image(b.name, auth, wid)
    poll(lambda: window_image(b.name, auth, wid) != first, timeout=20)
    second = window_image(b.name, auth, wid)
    poll(lambda: window_image(b.name, auth, wid) != second, timeout=20)


def test_xeyes_keeps_its_shape(servers, movable):
    a, b, _c, auth = servers
    spawn(movable, ["xeyes", "-title", "moved-eyes", "-geometry", "150x100+0+400"],
          movable.client_env())
    spawn(movable, ["xeyes", "-title", "direct-eyes", "-geometry", "150x100+400+400"],
          b.env | {"XAUTHORITY": auth})
    poll(lambda: top_window(a.name, auth, "moved-eyes"))
    direct = poll(lambda: top_window(b.name, auth, "direct-eyes"))
    moved_ok(movable, b.name)
    moved = poll(lambda: top_window(b.name, auth, "moved-eyes"))

    def bounding(wid: int) -> list[tuple[int, int, int, int]]:
        from Xlib.ext import shape

        d = xauthfile.open_xlib_display(b.name, auth)
        try:
            w = d.create_resource_object("window", wid)
            rects = w.shape_get_rectangles(shape.SK.Bounding).rectangles
            return sorted((r.x, r.y, r.width, r.height) for r in rects)
        finally:
            d.close()

    assert len(bounding(direct)) > 1  # xeyes is shaped (two ovals), not a rectangle
    assert bounding(moved) == bounding(direct)


def test_xterm_takes_keys_before_and_after_a_move(servers, movable, tmp_path):
    a, b, _c, auth = servers
    script = "read a; echo $a > f1; read b; echo $b > f2"
    term = spawn(movable, ["xterm", "-title", "typed", "-geometry", "80x24+0+0", "-e", "sh",
                           "-c", script], movable.client_env(), cwd=tmp_path)

    def type_on(display: str, text: str) -> None:
        env = dict(movable.env, DISPLAY=display)
        wid = poll(lambda: top_window(display, auth, "typed"))
        subprocess.run(["xdotool", "windowfocus", "--sync", str(wid)], env=env, check=True,
                       timeout=30)
        subprocess.run(["xdotool", "type", "--delay", "20", text], env=env, check=True,
                       timeout=30)
        subprocess.run(["xdotool", "key", "Return"], env=env, check=True, timeout=30)

    type_on(a.name, "before")
    poll(lambda: (tmp_path / "f1").exists() and (tmp_path / "f1").read_text() == "before\n")
    moved_ok(movable, b.name)
    type_on(b.name, "after")
    poll(lambda: (tmp_path / "f2").exists() and (tmp_path / "f2").read_text() == "after\n")
    term.wait(30)


def test_sequence_numbers_continue_across_a_move(servers, movable):
    a, b, _c, _auth = servers
    check = subprocess.Popen([sys.executable, SEQCHECK], stdout=subprocess.PIPE, text=True,
                             env=dict(movable.client_env(), SEQCHECK_ROUNDS="100000",
                                      SEQCHECK_UNTIL_FILE=str(movable.log_path) + ".stop"))
    movable.started.append(check)
    time.sleep(1.0)  # (it runs until told to stop; the move lands in the middle of it)
    assert check.poll() is None
    moved_ok(movable, b.name)
    time.sleep(1.0)
    moved_ok(movable, a.name)
    time.sleep(0.5)
    open(movable.log_path + ".stop", "w").close()
    out, _ = check.communicate(timeout=60)
    result = json.loads(out)
    assert result["ok"], result
    assert result["replies"] > 100 and result["errors"] > 100 and result["events"] > 10


def test_a_move_while_drawing_loses_nothing(servers, movable):
    _a, b, _c, _auth = servers
    flood = subprocess.Popen([sys.executable, FLOOD, "100000"], stdout=subprocess.PIPE,
                             text=True, env=movable.client_env())
    movable.started.append(flood)
    assert flood.stdout.readline() == "drawing\n"
    moved_ok(movable, b.name)
    assert flood.poll() is None  # the move came while it was drawing
    out, _ = flood.communicate(timeout=120)
    result = json.loads(out)
    assert result["ok"], result
    assert result["count"] == 100000


def test_a_move_to_a_16_bit_display_is_refused_and_the_program_stays(servers, movable):
    a, b, c, auth = servers
    logo = spawn(movable, ["xlogo", "-title", "staying", "-geometry", "100x100+0+600"],
                 movable.client_env())
    poll(lambda: top_window(a.name, auth, "staying"))
    r = movable.move(c.name)
    assert r.returncode != 0
    assert "depth 24" in r.stderr and "visual" in r.stderr, r.stderr
    assert logo.poll() is None
    assert top_window(a.name, auth, "staying")
    assert top_window(c.name, auth, "staying") is None
    moved_ok(movable, b.name)  # still working: it moves where it can go
    poll(lambda: top_window(b.name, auth, "staying"))


def test_describe_names_the_clients(servers, movable):
    from xproxy.move import control

    a, _b, _c, auth = servers
    spawn(movable, ["xlogo", "-title", "described"], movable.client_env())
    poll(lambda: top_window(a.name, auth, "described"))
    os.environ["XDG_RUNTIME_DIR"], saved = movable.env["XDG_RUNTIME_DIR"], os.environ.get(
        "XDG_RUNTIME_DIR")
    try:
        answer = control.request(int(movable.display[1:]), {"op": "describe"})
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    assert answer["ok"] and answer["display"] == movable.display
    assert answer["target"] == a.name and answer["geometry"] == [1024, 768]
    assert answer["depth"] == 24
    assert [c["wm_class"] for c in answer["clients"]] == ["XLogo"]
    assert answer["clients"][0]["name"] == "described"
