"""x11/watch.py byte by byte: the watch's requests after the setup, its barrier, and the
changes it reports; and, against a real Xvfb, that the display changes the link's answers
depend on are reported (a root property rewritten, a keymap changed, RANDR's primary output
set)."""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import time

import pytest

from testing.xserver import require
from xproxy.x11.watch import Change, DisplayWatch, merge

from .test_suppress import ROOT, setup_reply

#: Takes _NET_WM_CM_S0 (as a compositing manager starting) and says so.
OWN_SELECTION = """
import sys
from Xlib import X, display
d = display.Display()
w = d.screen().root.create_window(0, 0, 1, 1, 0, 0)
w.set_selection_owner(d.intern_atom("_NET_WM_CM_S0"), X.CurrentTime)
d.sync()
print("owner", flush=True)
sys.stdin.read()
"""


def reply(seq: int, payload: bytes = b"") -> bytes:
    return struct.pack("<BBHI", 1, 0, seq & 0xFFFF, 0) + payload.ljust(24, b"\0")


def extension_reply(seq: int, major: int, first_event: int) -> bytes:
    return reply(seq, bytes([1, major, first_event, 0]))


def requests(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos < len(data):
        out.append((data[pos], data[pos + 1]))
        pos += 4 * struct.unpack_from("<H", data, pos + 2)[0]
    return out


def ready_watch() -> DisplayWatch:
    w = DisplayWatch(b"MIT-MAGIC-COOKIE-1", b"k" * 16)
    assert w.start()[:1] == b"l"
    assert w.receive(setup_reply()) == []
    sent = requests(w.data_to_send())
    # the root; four selections' atoms; RANDR, XKB, XInput, XFIXES; three names interned
    assert sent == [(2, 0)] + [(16, 0)] * 4 + [(98, 0)] * 4 + [(16, 0)] * 3
    w.receive(b"".join(reply(seq, struct.pack("<I", 300 + seq)) for seq in range(2, 6)))
    w.receive(extension_reply(6, 140, 89) + extension_reply(7, 135, 85)
              + extension_reply(8, 131, 66) + extension_reply(9, 138, 87))
    sent = requests(w.data_to_send())
    assert sent == [(140, 0), (140, 4), (135, 0), (135, 1), (131, 47), (131, 46),
                    (138, 0)] + [(138, 2)] * 4 + [(43, 0)]
    assert not w.ready
    w.receive(b"".join(reply(seq, struct.pack("<I", 400 + seq)) for seq in range(10, 13)))
    w.receive(reply(13) + reply(15) + reply(17) + reply(19))  # the versions
    assert not w.ready
    w.receive(reply(24))  # GetInputFocus
    assert w.ready and w.failed is None
    assert w.groups == {"props", "randr", "monitors", "xkb", "xkbstate", "xi", "sel:302",
                        "sel:303", "sel:304", "sel:305"}  # not the interned names
    return w


def event(code: int, seq: int, body: bytes = b"") -> bytes:
    return struct.pack("<BxH", code, seq) + body.ljust(28, b"\0")


def test_the_watch_selects_then_reports_changes_by_atom_and_group() -> None:
    w = ready_watch()
    got = w.receive(event(28, 8, struct.pack("<II", ROOT, 23))
                    + event(28, 8, struct.pack("<II", 0x200001, 24))  # not a root window
                    + event(89, 8) + event(90, 8) + event(85, 8) + event(34, 8))
    assert merge(got) == Change(frozenset({23}), frozenset({"randr", "xkb"}))
    state = struct.pack("<BBH", 85, 2, 8).ljust(32, b"\0")  # XKB StateNotify: a modifier
    assert w.receive(state) == [Change(groups=frozenset({"xkbstate"}))]
    motion = struct.pack("<BBHIH", 35, 131, 8, 0, 6).ljust(32, b"\0")  # XI Motion
    assert w.receive(motion) == []
    hierarchy = struct.pack("<BBHIH", 35, 131, 8, 0, 11).ljust(32, b"\0")
    assert w.receive(hierarchy) == [Change(groups=frozenset({"xi"}))]
    owner = event(87, 21, struct.pack("<III", ROOT, 0x400001, 303))  # SetSelectionOwner
    assert w.receive(owner) == [Change(groups=frozenset({"sel:303"}))]
    # a ConfigureNotify of the root (RANDR's SetMonitor sends only that), not of another
    assert w.receive(event(22, 21, struct.pack("<II", 0x200001, 0x200001))
                     + event(22, 21, struct.pack("<II", ROOT, ROOT))) \
        == [Change(groups=frozenset({"randr"}))]


def test_the_watch_selects_property_and_structure_changes_on_the_roots() -> None:
    w = DisplayWatch()
    w.start()
    w.receive(setup_reply())
    select = w.data_to_send()[:16]
    assert struct.unpack("<BxHIII", select) == (2, 4, ROOT, 0x800, 0x420000)


def test_without_the_extensions_the_watch_vouches_for_root_properties_only() -> None:
    w = DisplayWatch()
    w.start()
    w.receive(setup_reply())
    w.data_to_send()
    w.receive(b"".join(reply(seq, struct.pack("<I", 300 + seq)) for seq in range(2, 6)))
    w.receive(reply(6, b"\0") + reply(7, b"\0") + reply(8, b"\0") + reply(9, b"\0"))
    assert requests(w.data_to_send()) == [(43, 0)]
    w.receive(reply(13))
    assert w.ready and w.groups == {"props"}


def test_an_error_before_the_barrier_fails_the_watch() -> None:
    w = DisplayWatch()
    w.start()
    w.receive(setup_reply())
    w.receive(struct.pack("<BBHIHB21x", 0, 10, 1, 0, 0, 2))  # BadAccess on the root
    assert w.failed and not w.ready


def test_a_refused_setup_fails_the_watch() -> None:
    w = DisplayWatch()
    w.start()
    reason = b"No protocol specified\n"
    w.receive(struct.pack("<BBHHH", 0, len(reason), 11, 0, 6) + reason.ljust(24, b"\0"))
    assert w.failed and "No protocol specified" in w.failed


@pytest.fixture
def xvfb():
    require("Xvfb")
    from testing.xvfb import start_xvfb

    x = start_xvfb()
    try:
        yield x
    finally:
        x.stop()


def test_a_real_x_server_reports_the_changes(xvfb) -> None:
    for tool in ("xprop", "setxkbmap", "xrandr", "xinput", "xdotool"):
        require(tool)
    env = xvfb.env
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(f"/tmp/.X11-unix/X{xvfb.display}")
    w = DisplayWatch(b"MIT-MAGIC-COOKIE-1", xvfb.cookie)
    sock.sendall(w.start())

    def until(done, what: str) -> list[Change]:
        seen: list[Change] = []
        deadline = time.monotonic() + 30
        while not done(seen):
            assert time.monotonic() < deadline, (what, seen)
            if select.select([sock], [], [], 0.2)[0]:
                seen += w.receive(sock.recv(65536))
                out = w.data_to_send()
                if out:
                    sock.sendall(out)
        return seen

    try:
        until(lambda _: w.ready or w.failed, "the watch was not ready")
        assert w.failed is None
        assert {g for g in w.groups if not g.startswith("sel:")} == {"props", "randr", "xkb",
                                                                        "xi", "monitors",
                                                                        "xkbstate"}
        assert len(w.selections) == 4
        subprocess.run(["xprop", "-root", "-f", "XT_WATCHED", "8s", "-set", "XT_WATCHED", "x"],
                       env=env, check=True, timeout=30)
        until(lambda seen: merge(seen).props, "no root property change")
        subprocess.run(["setxkbmap", "de"], env=env, check=True, timeout=30)
        until(lambda seen: "xkb" in merge(seen).groups, "no keyboard change")
        subprocess.run(["xdotool", "keydown", "shift", "keyup", "shift"], env=env, check=True,
                       timeout=30)
        until(lambda seen: "xkbstate" in merge(seen).groups, "no keyboard state change")
        subprocess.run(["xrandr", "--output", "screen", "--primary"], env=env, check=True,
                       timeout=30)
        until(lambda seen: "randr" in merge(seen).groups, "no RANDR change")
        subprocess.run(["xrandr", "--setmonitor", "XT-WATCHED", "640/169x480/127+0+0", "none"],
                       env=env, check=True, timeout=30)
        until(lambda seen: "randr" in merge(seen).groups, "no RANDR monitor change")
        subprocess.run(["xinput", "set-prop", "Xvfb mouse", "Coordinate Transformation Matrix",
                        "2", "0", "0", "0", "2", "0", "0", "0", "1"], env=env, check=True,
                       timeout=30)
        until(lambda seen: "xi" in merge(seen).groups, "no XInput change")
        owner = subprocess.Popen([sys.executable, "-c", OWN_SELECTION], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "owner"
            changed = until(lambda seen: any(g.startswith("sel:") for g in merge(seen).groups),
                            "no selection owner change")
            assert merge(changed).groups & {f"sel:{a}" for a in w.selections}
        finally:
            owner.kill()
            owner.wait()
    finally:
        sock.close()
