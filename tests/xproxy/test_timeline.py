"""`xproxy trace --timeline` and `--format perfetto` on real X programs and a real Xvfb: the
picture has one row per round trip the program waited for (counted again here from the
tracer's own JSON Lines of the same run), the Perfetto JSON one complete event per wait; and
through a slow link, the link agent's answers are told from the server's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from testing.xserver import require
from xproxy.observe import timeline
from xproxy.observe.waits import Answered

from .conftest import XPROXY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SUMMARY = re.compile(r"xproxy: (\d+) round trips waited .*?, (\d+) before the first window "
                     r"was mapped; (\d+) rows in ")


def waits_in_jsonl(path: str) -> int:
    """The definition of a wait, applied to the trace lines: a request answered (its first
    reply) before the same client sent anything else; the setup counts."""
    last: dict[int, int] = {}
    n = 0
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            c, d = r["client"], r["dir"]
            assert d != "error", r  # (the programs used here make none)
            if d == "request":
                last[c] = r["seq"]
            elif d == "setup":
                last[c] = 0
            elif d == "reply" and last.get(c) == r["seq"] and \
                    ("latency" in r or r["name"] == "Setup"):
                n += 1
                last[c] = -1
    return n


def rows_with_bars(png: str, colour: tuple[int, int, int]) -> list[int]:
    """The rows of the picture that hold a bar of `colour` on the time axis."""
    img = Image.open(png).convert("RGB")
    found = []
    for row in range((img.height - timeline.HEADER - timeline.FOOTER) // timeline.ROW):
        y = timeline.HEADER + row * timeline.ROW + timeline.ROW // 2
        if any(img.getpixel((x, y)) == colour for x in range(timeline.bar_left(), img.width)):
            found.append(row)
    return found


def check_picture(png: str, waits: int, colour: tuple[int, int, int]) -> None:
    with Image.open(png) as img:
        assert img.format == "PNG"
        assert img.size == (timeline.WIDTH, timeline.height(waits))
    assert rows_with_bars(png, colour) == list(range(waits))


def test_timeline_of_xdpyinfo_has_one_row_per_round_trip(xvfb, xauthority, tmp_path):
    require("xdpyinfo")
    png, lines = str(tmp_path / "t.png"), str(tmp_path / "t.jsonl")
    env = dict(xvfb.env, XAUTHORITY=xauthority)
    done = subprocess.run([*XPROXY, "trace", "--timeline", png, "--format", "json", "-o", lines,
                           "--", "xdpyinfo"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    m = SUMMARY.search(done.stderr)
    assert m, done.stderr
    waits, _, rows = map(int, m.groups())
    assert waits == rows == waits_in_jsonl(lines) > 5
    check_picture(png, waits, timeline.BAR_COLOURS[Answered.NO_LINK])

    out = str(tmp_path / "w.json")
    done = subprocess.run([*XPROXY, "trace", "--format", "perfetto", "-o", out, "--",
                           "xdpyinfo"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with open(out) as f:
        doc = json.load(f)
    complete = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == doc["otherData"]["waits"] > 5
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and e["args"]["answered"] == "no link"
               for e in complete)
    assert complete[0]["name"] == "Setup"


def test_timeline_of_xlogo_stopped_after_its_window_is_mapped(xvfb, xauthority, tmp_path):
    require("xlogo"), require("xdotool")
    png, out = str(tmp_path / "logo.png"), str(tmp_path / "logo.json")
    env = dict(xvfb.env, XAUTHORITY=xauthority)
    p = subprocess.Popen([*XPROXY, "trace", "--timeline", png, "--format", "perfetto", "-o",
                          out, "--", "xlogo"], env=env, cwd=ROOT, stderr=subprocess.PIPE,
                         text=True)
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--class",
                                "xlogo"], env=xvfb.env, capture_output=True, timeout=30,
                               check=False)
        assert found.returncode == 0
        time.sleep(0.5)  # its first expose drawn; the trace ends at SIGTERM all the same
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    m = SUMMARY.search(err)
    assert m, err
    waits, before, rows = map(int, m.groups())
    with open(out) as f:
        doc = json.load(f)
    other = doc["otherData"]
    assert other["first_map"] is not None and other["first_map"] > 0
    assert waits == rows == other["waits"] == len([e for e in doc["traceEvents"]
                                                   if e["ph"] == "X"])
    assert 0 < before == other["before_map"] <= waits
    check_picture(png, waits, timeline.BAR_COLOURS[Answered.NO_LINK])


def test_timeline_through_a_slow_link_shows_the_links_answers(tmp_path):
    """Warm cache, 25 ms each way: the setup crosses the link, QueryExtension of a known
    extension is answered by the agent; both are shown."""
    require("Xvfb"), require("xdpyinfo")
    from testing.wanlab import WanLab

    with WanLab(delay_ms=25) as lab:
        assert lab.run(["xdpyinfo"]).returncode == 0  # fills the cache
        png, out = str(tmp_path / "link.png"), str(tmp_path / "link.json")
        done = lab.run(["xdpyinfo"], "--trace", out, "--trace-format", "perfetto",
                       "--timeline", png, timeout=120)
        assert done.returncode == 0, done.stderr
        with open(out) as f:
            doc = json.load(f)
        complete = [e for e in doc["traceEvents"] if e["ph"] == "X"]
        answered = [(e["name"], e["args"]["answered"]) for e in complete]
        assert answered[0] == ("Setup", "server")
        assert ("QueryExtension", "link") in answered
        m = SUMMARY.search(done.stderr)
        assert m, done.stderr
        assert int(m.group(1)) == int(m.group(3)) == len(complete)
        with Image.open(png) as img:
            assert img.size == (timeline.WIDTH, timeline.height(len(complete)))
        link_rows = rows_with_bars(png, timeline.BAR_COLOURS[Answered.LINK])
        server_rows = rows_with_bars(png, timeline.BAR_COLOURS[Answered.SERVER])
        held_rows = rows_with_bars(png, timeline.BAR_COLOURS[Answered.HELD])
        assert link_rows and server_rows
        assert sorted(link_rows + server_rows + held_rows) == list(range(len(complete)))


#: A client whose every request with a reply is a round trip (python-xlib waits for each):
#: atoms asked one by one, then the same atoms each behind a ChangeProperty that could fail.
SYNC_CLIENT = """
from Xlib import Xatom, display
d = display.Display()
root = d.screen().root
names = [f"XT_WAITS_{i}" for i in range(8)]
for name in names:
    d.intern_atom(name)
for name in names[:3]:
    root.change_property(Xatom.CUT_BUFFER0, Xatom.STRING, 8, b"x")
    d.intern_atom(name)
d.close()
"""
ANSWERS = re.compile(r"xproxy: the link agent answered (\d+) requests at once and (\d+) once")


@pytest.mark.parametrize("delay_ms", [0, 10])
def test_the_waits_marked_the_links_are_the_suppressors_own_answers(tmp_path, delay_ms):
    """Every answer the agent's suppressor gave this run (its per-run counts, reported on
    "done") is a wait of this client, and the timeline marks exactly those the link's: at
    once or held behind the ChangeProperty (a round trip, as long as the server's). With no
    delay the server answers as fast as the agent: only the agent can say which were its."""
    require("Xvfb")
    from testing.wanlab import WanLab

    script = tmp_path / "sync_client.py"
    script.write_text(SYNC_CLIENT)
    with WanLab(delay_ms=delay_ms) as lab:
        cold = lab.run([sys.executable, str(script)])
        assert cold.returncode == 0, cold.stderr  # fills the cache
        png, out = str(tmp_path / "sync.png"), str(tmp_path / "sync.json")
        done = lab.run([sys.executable, str(script)], "--trace", out, "--trace-format",
                       "perfetto", "--timeline", png, timeout=120)
        assert done.returncode == 0, done.stderr
    m = ANSWERS.search(done.stderr)
    assert m, done.stderr
    at_once, held = map(int, m.groups())
    with open(out) as f:
        doc = json.load(f)
    waits = [(e["name"], e["args"]["answered"]) for e in doc["traceEvents"] if e["ph"] == "X"]
    assert sum(a == "link" for _, a in waits) == at_once >= 8
    assert sum(a == "held" for _, a in waits) == held
    assert [n for n, a in waits if a == "held"].count("InternAtom") >= 3
    assert {e["args"].get("behind") for e in doc["traceEvents"] if e["ph"] == "X"
            and e["name"] == "InternAtom" and e["args"]["answered"] == "held"} \
        == {"ChangeProperty"}
    assert waits[0] == ("Setup", "server")
    assert len(rows_with_bars(png, timeline.BAR_COLOURS[Answered.LINK])) == at_once
    assert len(rows_with_bars(png, timeline.BAR_COLOURS[Answered.HELD])) == held


def test_perfetto_needs_a_file_of_its_own(tmp_path):
    """The program's own output goes to stdout and stderr: the JSON document cannot."""
    for args in (["trace", "--to", ":99", "--format", "perfetto"],
                 ["trace", "--to", ":99", "--format", "perfetto", "-o", "-"],
                 ["run", "--to", "xproxy://127.0.0.1:1", "--trace-format", "perfetto"],
                 ["run", "--to", "xproxy://127.0.0.1:1", "--trace", str(tmp_path / "t"),
                  "--timeline", str(tmp_path / "t.png")]):
        done = subprocess.run([*XPROXY, *args, "--", "true"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 2, (args, done.stderr)
        assert "perfetto" in done.stderr, (args, done.stderr)


def test_drawing_nothing_and_more_rows_than_drawn(tmp_path, monkeypatch):
    from xproxy.observe.waits import Wait, WaitAnalysis

    empty = WaitAnalysis()
    assert timeline.draw(empty, str(tmp_path / "empty.png")) == 0
    with Image.open(tmp_path / "empty.png") as img:
        assert img.size == (timeline.WIDTH, timeline.height(0))
    monkeypatch.setattr(timeline, "MAX_ROWS", 5)
    many = WaitAnalysis()
    many.start = 0.0
    many.waits = [Wait(1, n, "GetInputFocus", n * 0.01, 0.005, Answered.NO_LINK)
                  for n in range(1, 9)]
    assert timeline.draw(many, str(tmp_path / "many.png")) == 5
    assert rows_with_bars(str(tmp_path / "many.png"),
                          timeline.BAR_COLOURS[Answered.NO_LINK]) == list(range(5))
