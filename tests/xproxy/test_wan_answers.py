"""The answers the link keeps valid by watching the display host (root-window properties, XKB,
RANDR), end to end: export, `run --to xproxy://...` through a delaying relay, a real Xvfb. A
change made on the display host by another client is heard of before the next answer, which
is the server's own (no mismatch); and real GTK and Qt programs find no mismatch with
`--verify-cache` once the cache is warm."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require

pytestmark = pytest.mark.timeout(300)

READ_ROOT = [sys.executable, "-c", """
import sys
from Xlib import X, display
d = display.Display()
root = d.screen().root
atom = d.intern_atom("XT_ANSWERED")
values = set()
for _ in range(20):
    prop = root.get_full_property(atom, X.AnyPropertyType)
    values.add(prop.value.decode() if prop is not None else "")
print(",".join(sorted(values)))
"""]


@pytest.fixture(scope="module")
def lab():
    require("Xvfb")
    with WanLab(delay_ms=5) as lab:
        yield lab


def changes_seen(lab: WanLab, before: int) -> None:
    """Wait until the link agent has heard of a change since `before` changes."""
    deadline = time.monotonic() + 60
    while lab.agent_stats().get("changes", 0) <= before:
        assert time.monotonic() < deadline, "the display host's change never reached the agent"
        time.sleep(0.1)


def on_display(lab: WanLab, *argv: str) -> str:
    return subprocess.run(argv, env=lab.display_env, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def over_link(lab: WanLab, argv: list[str], *flags: str) -> str:
    r = lab.run(argv, *flags)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_a_root_property_rewritten_on_the_display_host_is_read_anew(lab) -> None:
    require("xprop")
    on_display(lab, "xprop", "-root", "-f", "XT_ANSWERED", "8s", "-set", "XT_ANSWERED", "one")
    assert over_link(lab, READ_ROOT).strip() == "one"
    stats = lab.agent_stats()
    assert over_link(lab, READ_ROOT).strip() == "one"
    answered = lab.agent_stats()["answered"] - stats["answered"]
    assert answered >= 20  # every read was answered by the link (and the atom with them)
    on_display(lab, "xprop", "-root", "-f", "XT_ANSWERED", "8s", "-set", "XT_ANSWERED", "two")
    changes_seen(lab, stats["changes"])
    assert over_link(lab, READ_ROOT).strip() == "two"
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


def test_a_keymap_changed_on_the_display_host_is_read_anew(lab) -> None:
    for tool in ("xkbcomp", "setxkbmap"):
        require(tool)
    dump = ["sh", "-c", 'xkbcomp -xkb "$DISPLAY" -']
    on_display(lab, "setxkbmap", "us")
    direct = on_display(lab, *dump)
    assert over_link(lab, dump) == direct
    before = lab.agent_stats()
    assert over_link(lab, dump) == direct
    assert lab.agent_stats()["answered"] > before["answered"]
    on_display(lab, "setxkbmap", "de")
    changes_seen(lab, before["changes"])
    direct_de = on_display(lab, *dump)
    assert direct_de != direct
    assert over_link(lab, dump) == direct_de
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]
    on_display(lab, "setxkbmap", "us")


def test_a_randr_primary_output_set_on_the_display_host_is_read_anew(lab) -> None:
    require("xrandr")
    query = ["xrandr", "--current", "--verbose"]
    on_display(lab, "xrandr", "--output", "screen", "--primary")
    on_display(lab, "xrandr", "--noprimary")
    direct = on_display(lab, *query)
    assert over_link(lab, query) == direct
    before = lab.agent_stats()
    assert over_link(lab, query) == direct
    assert lab.agent_stats()["answered"] > before["answered"]
    on_display(lab, "xrandr", "--output", "screen", "--primary")
    changes_seen(lab, before["changes"])
    direct_primary = on_display(lab, *query)
    assert direct_primary != direct
    assert over_link(lab, query) == direct_primary
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


TOOLKIT_ENV = {"NO_AT_BRIDGE": "1", "GDK_BACKEND": "x11", "QT_QPA_PLATFORM": "xcb"}
#: (command, its window's class): shown until the window is mapped, then closed. Run inside
#: `xproxy run`, so xdotool looks through the link too.
TOOLKIT_PROGRAMS = {
    "gtk3-widget-factory": (["gtk3-widget-factory"], "gtk3-widget-factory"),
    "zenity": (["zenity", "--entry"], "zenity"),
    "mousepad": (["mousepad", "--disable-server"], "mousepad"),
    "featherpad": (["featherpad", "--standalone"], "featherpad"),
    "gtk4-widget-factory": (["gtk4-widget-factory"], "gtk4-widget-factory"),
}


def show(lab: WanLab, program: str, *flags: str) -> subprocess.CompletedProcess:
    argv, cls = TOOLKIT_PROGRAMS[program]
    script = (f'{" ".join(argv)} & p=$!; '
              f'until xdotool search --onlyvisible --class {cls} >/dev/null 2>&1; do '
              '  kill -0 $p || exit 3; sleep 0.2; done; '
              'xdotool search --onlyvisible --class ' + cls + ' getwindowgeometry >/dev/null; '
              'kill $p; wait $p; exit 0')
    env = {**lab.app_env, **TOOLKIT_ENV, "HOME": os.path.join(lab.work, "home")}
    os.makedirs(env["HOME"], exist_ok=True)
    return subprocess.run(lab.run_argv(["sh", "-c", script], *flags), env=env, cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("program", list(TOOLKIT_PROGRAMS))
def test_verify_cache_finds_no_mismatch_on_toolkit_programs_with_a_warm_cache(lab,
                                                                            program) -> None:
    require(TOOLKIT_PROGRAMS[program][0][0])
    require("xdotool")
    for flags in ((), ("--verify-cache",), ("--verify-cache",)):  # warm both agents' caches
        r = show(lab, program, *flags)
        assert r.returncode == 0, r.stderr[-2000:]
    assert "0 mismatches" in r.stderr, r.stderr[-2000:]
    stats = lab.agent_stats("--verify-cache")
    assert stats["compared"] > 100, stats
    assert stats["mismatches"] == 0, stats["mismatch_log"]
    normal = lab.agent_stats()
    assert normal["mismatches"] == 0, normal["mismatch_log"]


def test_an_input_device_property_changed_on_the_display_host_is_read_anew(lab) -> None:
    require("xinput")
    query = ["xinput", "list-props", "Xvfb mouse"]
    matrix = ["xinput", "set-prop", "Xvfb mouse", "Coordinate Transformation Matrix"]
    on_display(lab, *matrix, "1", "0", "0", "0", "1", "0", "0", "0", "1")
    direct = on_display(lab, *query)
    assert over_link(lab, query) == direct
    before = lab.agent_stats()
    assert over_link(lab, query) == direct
    assert lab.agent_stats()["answered"] > before["answered"]
    try:
        on_display(lab, *matrix, "2", "0", "0", "0", "2", "0", "0", "0", "1")
        changes_seen(lab, before["changes"])
        direct_scaled = on_display(lab, *query)
        assert direct_scaled != direct
        assert over_link(lab, query) == direct_scaled
    finally:
        on_display(lab, *matrix, "1", "0", "0", "0", "1", "0", "0", "0", "1")
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


READ_OWNER = [sys.executable, "-c", """
from Xlib import display
d = display.Display()
atom = d.intern_atom("_NET_WM_CM_S0")
print(",".join(sorted({str(d.get_selection_owner(atom)) for _ in range(20)})))
"""]
#: Takes _NET_WM_CM_S0 (as a compositing manager starting), says so, holds it until stdin ends.
OWN_SELECTION = [sys.executable, "-c", """
import sys
from Xlib import X, display
d = display.Display()
w = d.screen().root.create_window(0, 0, 1, 1, 0, 0)
w.set_selection_owner(d.intern_atom("_NET_WM_CM_S0"), X.CurrentTime)
d.sync()
print("owner", flush=True)
sys.stdin.read()
"""]


def test_a_selection_owner_gone_on_the_display_host_is_read_anew(lab) -> None:
    owner = subprocess.Popen(OWN_SELECTION, env=lab.display_env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "owner"
        owned = over_link(lab, READ_OWNER).strip()
        assert owned not in ("", "0")
        before = lab.agent_stats()
        assert over_link(lab, READ_OWNER).strip() == owned
        assert lab.agent_stats()["answered"] >= before["answered"] + 20
    finally:
        owner.kill()
        owner.wait()
    changes_seen(lab, before["changes"])
    assert over_link(lab, READ_OWNER).strip() == "0"
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


READ_MONITORS = [sys.executable, "-c", """
from Xlib import display
d = display.Display()
root = d.screen().root
d.xrandr_query_version()
seen = {tuple(m.name for m in root.xrandr_get_monitors(is_active=False).monitors)
        for _ in range(20)}
print(";".join(sorted(",".join(sorted(d.get_atom_name(a) for a in atoms)) for atoms in seen)))
"""]


def test_a_monitor_set_on_the_display_host_is_read_anew(lab) -> None:
    require("xrandr")
    first = over_link(lab, READ_MONITORS).strip()
    assert first and ";" not in first
    before = lab.agent_stats()
    assert over_link(lab, READ_MONITORS).strip() == first
    assert lab.agent_stats()["answered"] >= before["answered"] + 20
    on_display(lab, "xrandr", "--setmonitor", "XT-MON", "320/85x240/64+0+0", "none")
    try:
        changes_seen(lab, before["changes"])  # `xrandr --setmonitor` sends no RANDR event
        assert over_link(lab, READ_MONITORS).strip() == ",".join(sorted([*first.split(","),
                                                                        "XT-MON"]))
    finally:
        on_display(lab, "xrandr", "--delmonitor", "XT-MON")
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


READ_ABSENT_NAMES = [sys.executable, "-c", """
from Xlib import display
from Xlib.protocol import request
d = display.Display()
print(",".join(sorted({str(request.InternAtom(display=d.display, name=name, only_if_exists=1).atom)
                       for _ in range(10) for name in ("_NET_WORKAREA", "Device Product ID")})))
"""]


def test_names_toolkits_ask_only_if_they_exist_are_answered_by_the_link(lab) -> None:
    """The display host interns them, so the answer is an atom for good (not None, which
    another client may end at any time unseen) and the link answers it after the first ask."""
    atoms = over_link(lab, READ_ABSENT_NAMES).strip().split(",")
    assert len(atoms) == 2 and "0" not in atoms
    before = lab.agent_stats()
    assert over_link(lab, READ_ABSENT_NAMES).strip().split(",") == atoms
    assert lab.agent_stats()["answered"] >= before["answered"] + 20
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]


READ_XKB_STATE = [sys.executable, "-c", """
from Xlib import display
from Xlib.protocol import rq


class UseExtension(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(0), rq.RequestLength(),
                         rq.Card16("major"), rq.Card16("minor"))
    _reply = rq.Struct(rq.ReplyCode(), rq.Bool("supported"), rq.Card16("sequence_number"),
                       rq.ReplyLength(), rq.Card16("server_major"), rq.Card16("server_minor"),
                       rq.Pad(20))


class GetState(rq.ReplyRequest):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(4), rq.RequestLength(),
                         rq.Card16("device"), rq.Pad(2))
    _reply = rq.Struct(rq.ReplyCode(), rq.Card8("device_id"), rq.Card16("sequence_number"),
                       rq.ReplyLength(), rq.Card8("mods"), rq.Pad(23))


d = display.Display()
opcode = d.query_extension("XKEYBOARD").major_opcode
assert UseExtension(display=d.display, opcode=opcode, major=1, minor=0).supported
print(",".join(sorted({str(GetState(display=d.display, opcode=opcode, device=0x100).mods)
                       for _ in range(20)})))
"""]


def test_a_modifier_pressed_on_the_display_host_is_read_anew(lab) -> None:
    require("xdotool")
    assert over_link(lab, READ_XKB_STATE).strip() == "0"
    before = lab.agent_stats()
    assert over_link(lab, READ_XKB_STATE).strip() == "0"
    assert lab.agent_stats()["answered"] >= before["answered"] + 20
    on_display(lab, "xdotool", "keydown", "shift")
    try:
        changes_seen(lab, before["changes"])
        assert over_link(lab, READ_XKB_STATE).strip() == "1"  # ShiftMask
    finally:
        on_display(lab, "xdotool", "keyup", "shift")
    stats = lab.agent_stats()
    assert stats["mismatches"] == 0, stats["mismatch_log"]
