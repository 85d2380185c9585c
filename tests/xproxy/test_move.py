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
import struct
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


def start_movable(target: str, auth: str, tmp_path, name: str = "xproxy") -> Movable:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XAUTHORITY=auth, XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=ROOT)
    log = str(tmp_path / f"{name}.log")
    with open(log, "w") as err:
        process = subprocess.Popen([*XPROXY, "serve", "--movable", "--to", target, "-v"],
                                   env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                   cwd=ROOT)
    line = process.stdout.readline().strip()
    proxy = Movable(process, line.partition("=")[2], env, log)
    assert line.startswith("ready DISPLAY=:"), proxy.log()
    proxy.started = []
    return proxy


def stop_movable(proxy: Movable) -> None:
    for p in proxy.started:
        if p.poll() is None:
            p.kill()
            p.wait()
    proxy.process.terminate()
    try:
        proxy.process.wait(15)
    except subprocess.TimeoutExpired:
        proxy.process.kill()
        proxy.process.wait()


@pytest.fixture
def movable(servers, tmp_path):
    a, _b, _c, auth = servers
    proxy = start_movable(a.name, auth, tmp_path)
    yield proxy
    stop_movable(proxy)


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
    """The window's pixels, as far as the screen shows them (GetImage reads no further)."""
    from Xlib import X

    d = xauthfile.open_xlib_display(display, auth)
    try:
        w = d.create_resource_object("window", wid)
        g = w.get_geometry()
        screen = d.screen()
        width = min(g.width, screen.width_in_pixels - g.x)
        height = min(g.height, screen.height_in_pixels - g.y)
        image = w.get_image(0, 0, width, height, X.ZPixmap, 0xFFFFFFFF)
        return width, height, bytes(image.data)
    finally:
        d.close()


def moved_ok(proxy: Movable, target: str) -> None:
    r = proxy.move(target)
    assert r.returncode == 0, (r.stderr, proxy.log())
    assert r.stdout.startswith("moved 1 clients to " + target), r.stdout


@pytest.mark.parametrize("program", [["xlogo"], ["xlogo", "-render"], ["xclock"],
                                     ["xclock", "-norender"], ["xcalc"], ["xedit"]],
                         ids=" ".join)
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


def test_render_program_moved_there_and_back_looks_as_when_shown_directly(servers, movable):
    """xlogo with RENDER moved A -> B -> A: the second move reads the RENDER objects through
    a mapping that is no longer the identity (PictFormats, pictures, glyph sets)."""
    a, b, _c, auth = servers
    spawn(movable, ["xlogo", "-render", "-geometry", "200x200+0+0", "-title", "moved-back"],
          movable.client_env())
    spawn(movable, ["xlogo", "-render", "-geometry", "200x200+400+0", "-title", "direct-back"],
          a.env | {"XAUTHORITY": auth})
    poll(lambda: top_window(a.name, auth, "moved-back"))
    direct = poll(lambda: top_window(a.name, auth, "direct-back"))
    moved_ok(movable, b.name)
    poll(lambda: top_window(b.name, auth, "moved-back"))
    moved_ok(movable, a.name)
    moved = poll(lambda: top_window(a.name, auth, "moved-back"))
    poll(lambda: window_image(a.name, auth, moved) == window_image(a.name, auth, direct),
         timeout=60)


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


@pytest.mark.skipif(shutil.which("zenity") is None, reason="needs zenity (make install)")
def test_a_gtk3_program_takes_keys_after_a_move_with_xkb_shown(servers, movable):
    """zenity --entry (GTK 3, which reads its keymap and key events through XKEYBOARD) is
    moved, then typed into on the target: it prints what was typed."""
    a, b, _c, auth = servers
    entry = subprocess.Popen(["zenity", "--entry", "--title", "typed-gtk"],
                             env=movable.client_env() | {"NO_AT_BRIDGE": "1",
                                                         "GDK_BACKEND": "x11"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    movable.started.append(entry)
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        assert d.query_extension("XKEYBOARD") is not None
    finally:
        d.close()
    poll(lambda: top_window(a.name, auth, "typed-gtk"))
    time.sleep(1)
    moved_ok(movable, b.name)
    wid = poll(lambda: top_window(b.name, auth, "typed-gtk"))
    env = dict(movable.env, DISPLAY=b.name)
    subprocess.run(["xdotool", "windowfocus", "--sync", str(wid)], env=env, check=True,
                   timeout=30)
    subprocess.run(["xdotool", "type", "--delay", "30", "after"], env=env, check=True,
                   timeout=30)
    subprocess.run(["xdotool", "key", "Return"], env=env, check=True, timeout=30)
    out, err = entry.communicate(timeout=60)
    assert out == "after\n", err


def test_xkb_use_extension_and_selected_events_move_with_the_client(servers, movable):
    """A python-xlib client enables XKEYBOARD and selects XkbStateNotify; after the move XKB
    still answers its requests (GetState) and a modifier pressed on the target reaches it as
    XKB's event in its own event code."""
    from Xlib.protocol import rq

    class UseExtension(rq.ReplyRequest):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(0), rq.RequestLength(),
                             rq.Card16("major"), rq.Card16("minor"))
        _reply = rq.Struct(rq.ReplyCode(), rq.Bool("supported"), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Card16("major"), rq.Card16("minor"), rq.Pad(20))

    class SelectEvents(rq.Request):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(1), rq.RequestLength(),
                             rq.Card16("device"), rq.Card16("affect"), rq.Card16("clear"),
                             rq.Card16("all"), rq.Card16("affect_map"), rq.Card16("map"))

    class GetState(rq.ReplyRequest):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(4), rq.RequestLength(),
                             rq.Card16("device"), rq.Pad(2))
        _reply = rq.Struct(rq.ReplyCode(), rq.Card8("device"), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Card8("mods"), rq.Pad(23))

    _a, b, _c, auth = servers
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        info = d.query_extension("XKEYBOARD")
        assert info is not None
        assert UseExtension(display=d.display, opcode=info.major_opcode, major=1,
                            minor=0).supported
        state_notify = 1 << 2
        SelectEvents(display=d.display, opcode=info.major_opcode, device=0x100,
                     affect=state_notify, clear=0, all=state_notify, affect_map=0, map=0)
        d.sync()
        moved_ok(movable, b.name)
        GetState(display=d.display, opcode=info.major_opcode, device=0x100)  # no BadAccess
        subprocess.run(["xdotool", "key", "shift"], env=dict(movable.env, DISPLAY=b.name),
                       check=True, timeout=30)

        def state_notified():
            while d.pending_events():
                ev = d.next_event()
                if ev.type == info.first_event and ev._binary[1] == 2:  # XkbStateNotify
                    return ev
            return None

        poll(state_notified)
    finally:
        d.close()


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
    flood = subprocess.Popen([sys.executable, FLOOD, "200000"], stdout=subprocess.PIPE,
                             text=True, env=movable.client_env())
    movable.started.append(flood)
    assert flood.stdout.readline() == "drawing\n"
    moved_ok(movable, b.name)
    assert flood.poll() is None  # the move came while it was drawing
    out, _ = flood.communicate(timeout=120)
    result = json.loads(out)
    assert result["ok"], result
    assert result["count"] == 200000


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
    # still working: it moves where it can go (here named by the X server's socket)
    moved_ok(movable, f"/tmp/.X11-unix/X{b.display}")
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


def test_every_client_of_the_display_moves_together(servers, movable):
    a, b, _c, auth = servers
    for title in ("together-1", "together-2"):
        spawn(movable, ["xlogo", "-title", title, "-geometry", "80x80+600+600"],
              movable.client_env())
        poll(lambda t=title: top_window(a.name, auth, t))
    r = movable.move(b.name)
    assert r.returncode == 0 and r.stdout.startswith(f"moved 2 clients to {b.name} in "), r
    for title in ("together-1", "together-2"):
        poll(lambda t=title: top_window(b.name, auth, t))
        assert top_window(a.name, auth, title) is None


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_its_replies_is_not_buffered_without_bound(movable):
    """60 GetImage of the whole root window (3 MB each) and not a byte read: the proxy stops
    reading the server instead of keeping 180 MB for the client."""
    sys.path.insert(0, os.path.dirname(SEQCHECK))
    import seqcheck_client

    env = os.environ.copy()
    os.environ.update(DISPLAY=movable.display, XAUTHORITY=movable.env["XAUTHORITY"])
    try:
        connected = seqcheck_client.connect()
    finally:
        os.environ.clear()
        os.environ.update(env)
    assert connected is not None
    sock, _base, root, _cmap = connected
    before = rss(movable.process.pid)
    get_image = struct.pack("<BBHIhhHHI", 73, 2, 5, root, 0, 0, 1024, 768, 0xFFFFFFFF)
    sock.sendall(get_image * 60)
    time.sleep(3)  # (time for the server to answer them all, if nothing held it back)
    grown = rss(movable.process.pid) - before
    sock.close()
    assert grown < 40 << 20, f"the proxy grew by {grown >> 20} MB"


@pytest.mark.skipif(shutil.which("zenity") is None, reason="needs zenity (make install)")
@pytest.mark.parametrize("args", [
    ["zenity", "--info", "--text", "moved or not", "--title", "gtk3"],
    ["xterm", "-T", "gtk3", "-geometry", "60x10+0+0", "-e", "sh", "-c",
     "echo moved or not; ls /; sleep 300"],
], ids=["zenity", "xterm"])
def test_a_gtk3_program_and_xterm_moved_look_as_when_shown_directly(servers, movable, args):
    """zenity (GTK 3, drawing with RENDER through cairo) and xterm, shown directly on B, then
    the same moved from A to B: the same picture. (One at a time, since both windows take
    the same title and place.)"""
    a, b, _c, auth = servers
    gtk = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11"}
    shown = spawn(movable, args, b.env | {"XAUTHORITY": auth} | gtk)
    try:
        wid = poll(lambda: top_window(b.name, auth, "gtk3"))
        time.sleep(1)

        def settled() -> tuple[int, int, bytes] | None:
            one = window_image(b.name, auth, wid)
            return one if one == window_image(b.name, auth, wid) else None

        direct = poll(settled)
        assert len(set(memoryview(direct[2]).cast("I"))) > 1
    finally:
        shown.kill()
        shown.wait()
    poll(lambda: top_window(b.name, auth, "gtk3") is None)
    spawn(movable, args, movable.client_env() | gtk)
    poll(lambda: top_window(a.name, auth, "gtk3"))
    time.sleep(1)
    moved_ok(movable, b.name)
    moved = poll(lambda: top_window(b.name, auth, "gtk3"))
    poll(lambda: window_image(b.name, auth, moved) == direct, timeout=60)


def rows_that_change(display: str, auth: str, wid: int) -> tuple[tuple[int, int, bytes],
                                                                    set[int]]:
    """The window's picture, and the rows of it that change by themselves over two seconds
    (gtk4-widget-factory's pulsing progress bar)."""
    first = window_image(display, auth, wid)
    width = first[0]
    rows: set[int] = set()
    for _ in range(4):
        time.sleep(0.5)
        other = window_image(display, auth, wid)
        rows.update(i // (4 * width) for i in range(0, len(first[2]), 4)
                    if first[2][i : i + 4] != other[2][i : i + 4])
    return first, rows


def without_rows(image: tuple[int, int, bytes], rows: set[int]) -> bytes:
    stride = 4 * image[0]
    return b"".join(image[2][y * stride : (y + 1) * stride] for y in range(image[1])
                    if y not in rows)


@pytest.mark.skipif(shutil.which("gtk4-widget-factory") is None,
                    reason="needs gtk4-widget-factory (gtk-4-examples; make install)")
def test_a_gtk4_program_moved_looks_as_when_shown_directly_and_takes_keys(servers, movable,
                                                                         tmp_path):
    """gtk4-widget-factory (GTK 4, which needs XInput 2) shown directly on B, then through
    the movable display on A and moved to B: the same picture (but for the rows it changes
    by itself); then ctrl+q typed on B reaches it through XI 2 and it quits, having said
    nothing critical."""
    a, b, _c, auth = servers
    title = "GTK Widget Factory"
    settings = tmp_path / "config" / "gtk-4.0"
    settings.mkdir(parents=True)
    (settings / "settings.ini").write_text(
        "[Settings]\ngtk-enable-animations=0\ngtk-cursor-blink=false\n")
    gtk = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    shown = spawn(movable, ["gtk4-widget-factory"], b.env | {"XAUTHORITY": auth} | gtk)
    try:
        wid = poll(lambda: top_window(b.name, auth, title), timeout=60)

        def settled() -> tuple[tuple[int, int, bytes], set[int]] | None:
            image, rows = rows_that_change(b.name, auth, wid)
            return (image, rows) if len(rows) < image[1] // 20 else None  # (drawn, at rest)

        direct, changing = poll(settled, timeout=60)
        assert len(set(memoryview(direct[2]).cast("I"))) > 10
    finally:
        shown.kill()
        shown.wait()
    poll(lambda: top_window(b.name, auth, title) is None)
    factory = spawn(movable, ["gtk4-widget-factory"], movable.client_env() | gtk)
    poll(lambda: top_window(a.name, auth, title), timeout=60)
    time.sleep(2)
    moved_ok(movable, b.name)
    moved = poll(lambda: top_window(b.name, auth, title))
    expected = without_rows(direct, changing)
    poll(lambda: without_rows(window_image(b.name, auth, moved), changing) == expected,
         timeout=60)
    assert factory.poll() is None
    env = dict(movable.env, DISPLAY=b.name)
    subprocess.run(["xdotool", "windowfocus", "--sync", str(moved)], env=env, check=True,
                   timeout=30)
    subprocess.run(["xdotool", "key", "ctrl+q"], env=env, check=True, timeout=30)
    _, err = factory.communicate(timeout=30)
    assert factory.returncode == 0, err
    # (no MapNotify for windows mapped all along: GDK asserts on one)
    assert b"CRITICAL" not in err, err


def test_xi2_events_follow_a_move_and_other_devices_refuse_it(servers, movable):
    """A python-xlib client selects XI 2 key presses on its window. A move to a server with
    another master device is refused (the client may hold device ids) and the client keeps
    its keys where it is; a move to B, and back to A, carries the selection: a key pressed
    there reaches it as a GenericEvent with its own XI opcode, window ids and a time that has
    not gone back. Its XI passive key grab is held on B (another client's is refused)."""
    from Xlib.ext import ge, xinput
    from Xlib.protocol import rq

    class AddMaster(rq.Request):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(43), rq.RequestLength(),
                             rq.Card8("num_changes"), rq.Pad(3), rq.Card16("type"),
                             rq.Card16("length"), rq.LengthOf("name", 2), rq.Card8("send_core"),
                             rq.Card8("enable"), rq.String8("name"))

    a, b, _c, auth = servers
    other = start_xvfb()
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        subprocess.run(["xauth", "-f", auth, "add", other.name, "MIT-MAGIC-COOKIE-1",
                        other.cookie.hex()], check=True)
        x = xauthfile.open_xlib_display(other.name, auth)
        x.xinput_query_version()
        name = b"xproxy test"
        AddMaster(display=x.display, opcode=x.display.get_extension_major("XInputExtension"),
                  num_changes=1, type=1, length=(8 + len(name) + 3) // 4, send_core=1,
                  enable=1, name=name)
        x.sync()
        x.close()

        major = d.display.get_extension_major("XInputExtension")
        assert d.xinput_query_version().major_version == 2
        w = d.screen().root.create_window(0, 650, 60, 60, 0, d.screen().root_depth)
        w.set_wm_name("xi2")
        w.xinput_select_events([(xinput.AllMasterDevices, xinput.KeyPressMask)])
        keyboard, unused_key = 3, 10  # (the core keyboard; a key the test does not press)

        def grab_key(window) -> list[int]:
            """XIPassiveGrabDevice of unused_key on `window`: the modifiers it could not
            grab (taken by another client)."""
            return list(window.xinput_grab_keycode(
                keyboard, 0, unused_key, xinput.GrabModeAsync, xinput.GrabModeAsync, False,
                xinput.KeyPressMask, [0]).modifiers)

        assert grab_key(w) == []
        w.map()
        d.sync()

        def key_on(display: str) -> object:
            env = dict(movable.env, DISPLAY=display)
            wid = poll(lambda: top_window(display, auth, "xi2"))
            subprocess.run(["xdotool", "windowfocus", "--sync", str(wid)], env=env, check=True,
                           timeout=30)
            subprocess.run(["xdotool", "key", "a"], env=env, check=True, timeout=30)

            def pressed():
                while d.pending_events():
                    ev = d.next_event()
                    if ev.type == ge.GenericEventCode and ev.evtype == xinput.KeyPress:
                        return ev
                return None

            return poll(pressed)

        before = key_on(a.name)
        r = movable.move(other.name)
        assert r.returncode != 0 and "XInputExtension devices differ" in r.stderr, r.stderr
        assert top_window(other.name, auth, "xi2") is None
        again = key_on(a.name)  # still there, still taking keys
        moved_ok(movable, b.name)
        assert top_window(a.name, auth, "xi2") is None
        after = key_on(b.name)
        on_b = xauthfile.open_xlib_display(b.name, auth)
        try:
            on_b.xinput_query_version()
            real = on_b.create_resource_object("window", top_window(b.name, auth, "xi2"))
            assert len(grab_key(real)) == 1  # the client's passive grab is held on B
        finally:
            on_b.close()
        moved_ok(movable, a.name)  # (back, through a mapping that is no longer the identity)
        back = key_on(a.name)
        times = []
        for ev in (before, again, after, back):
            assert ev.extension == major
            # (python-xlib leaves XI 2's data raw, from 10: time at 12, root at 20, event at
            # 24 in XI2proto's DeviceEvent)
            time_, root, event = struct.unpack_from("=I4xII", ev.data, 2)
            assert (event, root) == (w.id, d.screen().root.id)
            times.append(time_)
        assert times == sorted(times)
    finally:
        d.close()
        other.stop()


def test_a_selection_and_properties_move_with_their_window(servers, movable):
    """A python-xlib client owns a selection and set properties; after the move the target
    says its window owns the selection, and the client still sees its own ids and atoms."""
    from Xlib import X, Xatom

    _a, b, _c, auth = servers
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        w = d.screen().root.create_window(0, 500, 60, 60, 0, d.screen().root_depth,
                                          event_mask=X.PropertyChangeMask)
        w.set_wm_name("owner")
        selection = d.intern_atom("XPROXY_MOVE_TEST")
        note = d.intern_atom("XPROXY_NOTE")
        w.change_property(note, Xatom.ATOM, 32, [selection, Xatom.WM_NAME])
        w.set_selection_owner(selection, X.CurrentTime)
        w.map()
        d.sync()
        moved_ok(movable, b.name)
        real = poll(lambda: top_window(b.name, auth, "owner"))
        direct = xauthfile.open_xlib_display(b.name, auth)
        try:
            on_b = direct.intern_atom("XPROXY_MOVE_TEST")
            assert direct.get_selection_owner(on_b).id == real
            prop = direct.create_resource_object("window", real).get_full_property(
                direct.intern_atom("XPROXY_NOTE"), Xatom.ATOM)
            assert list(prop.value) == [on_b, Xatom.WM_NAME]
        finally:
            direct.close()
        # and through the proxy, the client's own values still
        assert d.get_selection_owner(selection).id == w.id
        assert list(w.get_full_property(note, Xatom.ATOM).value) == [selection, Xatom.WM_NAME]
        assert d.intern_atom("XPROXY_MOVE_TEST", only_if_exists=True) == selection
    finally:
        d.close()


def test_xfixes_selection_input_and_a_region_move_with_the_client(servers, movable):
    """A python-xlib client asks XFIXES for selection-owner events and makes a region; after
    the move a selection taken on the target reaches it as XFIXES' event in its own codes and
    values, and the region reads back the same rectangles through the proxy."""
    from Xlib import X
    from Xlib.ext import xfixes
    from Xlib.protocol import rq, structs

    class CreateRegion(rq.Request):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(5), rq.RequestLength(),
                             rq.Card32("region"), rq.List("rectangles", structs.Rectangle))

    class FetchRegion(rq.ReplyRequest):
        _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(19), rq.RequestLength(),
                             rq.Card32("region"))
        _reply = rq.Struct(rq.ReplyCode(), rq.Pad(1), rq.Card16("sequence_number"),
                           rq.ReplyLength(), rq.Object("extents", structs.Rectangle), rq.Pad(16),
                           rq.List("rectangles", structs.Rectangle))

    _a, b, _c, auth = servers
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        assert d.has_extension("XFIXES")
        major = d.display.get_extension_major("XFIXES")
        d.xfixes_query_version()
        w = d.screen().root.create_window(0, 500, 60, 60, 0, d.screen().root_depth)
        w.set_wm_name("xfixes")
        selection = d.intern_atom("XPROXY_XFIXES_TEST")
        d.xfixes_select_selection_input(w, selection, xfixes.XFixesSetSelectionOwnerNotifyMask)
        region = d.display.allocate_resource_id()
        rects = [(1, 2, 3, 4), (10, 20, 5, 5)]
        CreateRegion(display=d.display, opcode=major, region=region, rectangles=[
            {"x": x, "y": y, "width": width, "height": height} for x, y, width, height in rects])
        w.map()
        d.sync()
        moved_ok(movable, b.name)
        poll(lambda: top_window(b.name, auth, "xfixes"))
        other = xauthfile.open_xlib_display(b.name, auth)
        try:
            owner = other.screen().root.create_window(0, 0, 1, 1, 0, other.screen().root_depth)
            owner.set_selection_owner(other.intern_atom("XPROXY_XFIXES_TEST"), X.CurrentTime)
            other.sync()
        finally:
            other.close()

        def notified():
            while d.pending_events():
                ev = d.next_event()
                if type(ev).__name__ == "SetSelectionOwnerNotify":  # (a copy per display)
                    return ev
            return None

        ev = poll(notified)
        assert ev.window.id == w.id and ev.selection == selection
        reply = FetchRegion(display=d.display, opcode=major, region=region)
        assert sorted((r.x, r.y, r.width, r.height) for r in reply.rectangles) == rects
    finally:
        d.close()


def test_the_input_focus_and_a_passive_grab_move_with_the_client(servers, movable):
    """A python-xlib client gives its window the focus, grabs a button on it, selects property
    changes on the root and grabs a key there; after the move the target says its window has
    the focus, another client's grab of the same button or key there is refused (BadAccess):
    the grabs are held, and a root property changed on the target reaches the client."""
    from Xlib import X, Xatom, error

    _a, b, _c, auth = servers
    d = xauthfile.open_xlib_display(movable.display, auth)
    try:
        w = d.screen().root.create_window(0, 600, 60, 60, 0, d.screen().root_depth)
        w.set_wm_name("focused")
        w.map()
        d.sync()
        w.set_input_focus(X.RevertToParent, X.CurrentTime)
        w.grab_button(3, X.ControlMask, False, X.ButtonPressMask, X.GrabModeAsync,
                      X.GrabModeAsync, X.NONE, X.NONE)
        d.screen().root.change_attributes(event_mask=X.PropertyChangeMask)
        d.screen().root.grab_key(38, X.Mod4Mask, False, X.GrabModeAsync, X.GrabModeAsync)
        prop = d.intern_atom("XPROXY_ROOT_TEST")
        d.sync()
        moved_ok(movable, b.name)
        real = poll(lambda: top_window(b.name, auth, "focused"))
        other = xauthfile.open_xlib_display(b.name, auth)
        try:
            assert other.get_input_focus().focus.id == real
            refused = []
            other.screen().root.grab_key(38, X.Mod4Mask, False, X.GrabModeAsync,
                                         X.GrabModeAsync,
                                         onerror=lambda err, *_: refused.append(err))
            other.sync()
            assert refused and isinstance(refused[0], error.BadAccess)
            refused.clear()
            other.screen().root.change_property(other.intern_atom("XPROXY_ROOT_TEST"),
                                                Xatom.STRING, 8, b"moved")
            other.sync()

            def notified():
                while d.pending_events():
                    ev = d.next_event()
                    if ev.type == X.PropertyNotify and ev.atom == prop:
                        return ev
                return None

            assert poll(notified).window.id == d.screen().root.id
            target = other.create_resource_object("window", real)
            target.grab_button(3, X.ControlMask, False, X.ButtonPressMask, X.GrabModeAsync,
                               X.GrabModeAsync, X.NONE, X.NONE,
                               onerror=lambda err, *_: refused.append(err))
            other.sync()
            assert refused and isinstance(refused[0], error.BadAccess)
            target.grab_button(2, X.ControlMask, False, X.ButtonPressMask, X.GrabModeAsync,
                               X.GrabModeAsync, X.NONE, X.NONE,
                               onerror=lambda err, *_: refused.append(err))
            other.sync()
            assert len(refused) == 1  # (another button is free)
        finally:
            other.close()
        assert d.get_input_focus().focus.id == w.id  # and the client sees its own id
    finally:
        d.close()


def test_movable_refuses_options_it_does_not_honour():
    r = subprocess.run([*XPROXY, "serve", "--movable", "--to", ":1", "--trace", "-"],
                       capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "--movable does not go with --trace" in r.stderr
