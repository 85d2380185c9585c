"""The tracer against real X programs on a real Xvfb: the JSON Lines schema, the text form,
`xproxy trace -- COMMAND`, and the name filters."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from testing.xserver import require
from xproxy.observe.trace import NameFilter, Tracer, format_json, format_text
from xproxy.x11.decode.decoder import Decoded

from .conftest import XPROXY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
DIRS = {"setup", "request", "reply", "event", "error"}


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_schema(records: list[dict]) -> None:
    assert records
    for r in records:
        assert type(r["client"]) is int and r["client"] >= 1
        assert type(r["seq"]) is int and r["seq"] >= 0
        assert r["dir"] in DIRS
        assert isinstance(r["name"], str) and r["name"]
        assert isinstance(r["fields"], dict)
        assert type(r["time"]) is float


def run_trace(xvfb, xauthority, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(xvfb.env, XAUTHORITY=xauthority)
    return subprocess.run(check=False, args=[*XPROXY, "trace", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_json_trace_of_xdpyinfo_and_xlogo(xvfb, xauthority, start_proxy, tmp_path):
    require("xdpyinfo"), require("xlogo"), require("xdotool")
    path = str(tmp_path / "trace.jsonl")
    proxy = start_proxy("--trace", path, "--trace-format", "json")
    info = subprocess.run(check=False, args=["xdpyinfo"], env=proxy.env, capture_output=True, text=True,
                          timeout=30)
    assert info.returncode == 0, info.stderr
    logo = subprocess.Popen(["xlogo"], env=proxy.env)
    try:
        # wait, looking at the real display, until xlogo's window is up
        found = subprocess.run(check=False, args=["xdotool", "search", "--sync", "--onlyvisible", "--class",
                                "xlogo"], env=xvfb.env, capture_output=True, timeout=20)
        assert found.returncode == 0
        # the trace is flushed while the session goes on (every second)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(path) as f:
                if '"name":"MapWindow"' in f.read():
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("MapWindow not in the trace while xlogo runs")
    finally:
        logo.terminate()
        logo.wait(10)
    assert proxy.stop() == 0, proxy.log()
    records = read_jsonl(path)
    check_schema(records)
    clients = {r["client"] for r in records}
    assert len(clients) == 2, clients
    times = [r["time"] for r in records]
    assert times == sorted(times)

    queries = [r for r in records if r["name"] == "QueryExtension"]
    asked = {(r["client"], r["seq"]): r["fields"]["name"] for r in queries
             if r["dir"] == "request"}
    answers = [r for r in queries if r["dir"] == "reply"]
    assert "BIG-REQUESTS" in asked.values() and "RENDER" in asked.values()
    assert answers and all(type(r["fields"]["major_opcode"]) is int for r in answers)
    assert {(r["client"], r["seq"]) for r in answers} == set(asked)
    render = next(r for r in answers if r["fields"]["name"] == "RENDER")
    assert render["fields"]["present"] is True and render["fields"]["major_opcode"] >= 128
    # extension requests carry their extension's name, from this connection's opcodes
    assert any(r["name"] == "BIG-REQUESTS:Enable" and r["dir"] == "reply" for r in records)

    # xlogo: its top window created, mapped, and the server's events about it decoded
    creates = [r for r in records if r["name"] == "CreateWindow"]
    assert creates
    logo_client = creates[0]["client"]
    windows = {r["fields"]["wid"] for r in creates}
    top = creates[0]["fields"]
    assert top["width"] > 0 and top["height"] > 0 and isinstance(top["attrs"], dict)
    maps = [r for r in records if r["name"] == "MapWindow"]
    assert maps and maps[0]["fields"]["window"] in windows
    events = [r for r in records if r["dir"] == "event" and r["client"] == logo_client]
    names = {r["name"] for r in events}
    assert {"MapNotify", "Expose"} <= names, names
    assert any(r["name"] == "MapNotify" and r["fields"]["window"] in windows for r in events)
    expose = next(r for r in events if r["name"] == "Expose")
    assert expose["fields"]["window"] in windows and expose["fields"]["width"] > 0
    # atoms interned by xlogo are named in the records that use them
    assert any(r.get("atoms", {}).get(str(r["fields"].get("property"))) == "WM_PROTOCOLS"
               for r in records if r["name"] == "ChangeProperty")
    # the setup shows the auth protocol, never the cookie
    setup = next(r for r in records if r["dir"] == "setup")
    assert setup["fields"]["auth_name"] == "MIT-MAGIC-COOKIE-1"
    assert "auth_data" not in setup["fields"]


def test_xproxy_trace_runs_a_command_and_exits_with_its_status(xvfb, xauthority, tmp_path):
    require("xdpyinfo")
    path = str(tmp_path / "t.txt")
    done = run_trace(xvfb, xauthority, "-o", path, "--", "xdpyinfo")
    assert done.returncode == 0, done.stderr
    assert "name of display:" in done.stdout  # the command's own output is untouched
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("001:<:0000:") and " Setup Setup " in lines[0]
    assert any(":<:0001:" in ln and 'Request QueryExtension name="BIG-REQUESTS"' in ln
               for ln in lines)
    assert any(" Reply QueryExtension present=True major_opcode=" in ln for ln in lines)
    # predefined atoms are named in text
    assert any('property=23("RESOURCE_MANAGER")' in ln for ln in lines)
    failing = run_trace(xvfb, xauthority, "-o", str(tmp_path / "u.txt"), "--", "sh", "-c",
                        "xdpyinfo >/dev/null && exit 3")
    assert failing.returncode == 3, failing.stderr
    missing = run_trace(xvfb, xauthority, "--", "/nonexistent/program")
    assert missing.returncode != 0


def test_trace_filters_only_and_skip(xvfb, xauthority, tmp_path):
    require("xdpyinfo")
    only = str(tmp_path / "only.jsonl")
    done = run_trace(xvfb, xauthority, "-o", only, "--format", "json", "--only",
                     "QueryExtension,GetInputFocus", "--", "xdpyinfo", "-queryExtensions")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(only)
    check_schema(records)
    assert {r["name"] for r in records} == {"QueryExtension", "GetInputFocus"}
    assert {r["dir"] for r in records} == {"request", "reply"}

    skip = str(tmp_path / "skip.jsonl")
    done = run_trace(xvfb, xauthority, "-o", skip, "--format", "json", "--skip",
                     "QueryExtension", "--skip", "Setup,*:QueryVersion", "--", "xdpyinfo",
                     "-ext", "all")
    assert done.returncode == 0, done.stderr
    names = {r["name"] for r in read_jsonl(skip)}
    assert "QueryExtension" not in names and "Setup" not in names
    assert not any(n.endswith(":QueryVersion") for n in names)
    assert "ListExtensions" in names and "BIG-REQUESTS:Enable" in names

    pattern = str(tmp_path / "pattern.jsonl")
    done = run_trace(xvfb, xauthority, "-o", pattern, "--format", "json", "--only", "RENDER:*",
                     "--", "xdpyinfo", "-ext", "RENDER")
    assert done.returncode == 0, done.stderr
    names = {r["name"] for r in read_jsonl(pattern)}
    assert names and all(n.startswith("RENDER:") for n in names)
    assert "RENDER:QueryPictFormats" in names


def test_a_filtered_trace_still_names_atoms_interned_in_what_it_leaves_out(xvfb, xauthority,
                                                                           tmp_path):
    """--only decodes only the messages it keeps, but atom names are learned from all."""
    require("xprop")
    path = str(tmp_path / "only.jsonl")
    done = run_trace(xvfb, xauthority, "-o", path, "--format", "json", "--only", "GetProperty",
                     "--", "sh", "-c", "xprop -root -f XTR_FILTERED 8s -set XTR_FILTERED hi"
                     " && xprop -root XTR_FILTERED")
    assert done.returncode == 0, done.stderr
    assert 'XTR_FILTERED(STRING) = "hi"' in done.stdout
    records = read_jsonl(path)
    check_schema(records)
    assert {r["name"] for r in records} == {"GetProperty"}
    asks = [r for r in records if r["dir"] == "request"]
    assert any(r.get("atoms", {}).get(str(r["fields"]["property"])) == "XTR_FILTERED"
               for r in asks), asks


def test_trace_to_stderr_by_default(xvfb, xauthority):
    """All of it is there when the command ends, apart from the command's own output."""
    require("xdpyinfo")
    done = run_trace(xvfb, xauthority, "--", "xdpyinfo", "-queryExtensions")
    assert done.returncode == 0, done.stderr
    assert "name of display:" in done.stdout and "001:<:" not in done.stdout
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("001:")]
    assert lines[0].startswith("001:<:0000:") and " Setup Setup " in lines[0]
    assert any(" Reply QueryExtension present=True major_opcode=" in ln for ln in lines)
    assert all(re.match(r"001:[<>]:\d{4}:\s*\d+: (Setup|Request|Reply|Event|Error) ", ln)
               for ln in lines)  # whole lines, none cut short


def test_a_trace_file_can_be_followed_while_the_command_runs(xvfb, xauthority, tmp_path):
    """Flushed every second: the traced command itself reads what was traced so far, while
    its X client (xlogo) is still connected."""
    require("xlogo")
    path = str(tmp_path / "t.txt")
    done = run_trace(xvfb, xauthority, "-o", path, "--", "sh", "-c",
                     f"xlogo & sleep 2.5; grep -c ':<:' {path}; kill $!")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 10


def test_a_trace_file_that_cannot_be_written_stops_tracing_not_relaying(xvfb, xauthority):
    """/dev/full: every write fails with ENOSPC. The program runs as it would untraced, and
    the proxy says once why the trace stopped."""
    require("xdpyinfo")
    done = run_trace(xvfb, xauthority, "-o", "/dev/full", "--", "xdpyinfo", "-queryExtensions")
    assert done.returncode == 0, done.stderr
    assert "name of display:" in done.stdout and "RENDER" in done.stdout
    assert done.stderr.count("cannot write the trace to /dev/full") == 1, done.stderr
    assert "No space left on device" in done.stderr


def test_tracer_stops_at_the_first_failed_write():
    class Full(io.StringIO):
        name = "full.log"
        writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            raise OSError(28, "No space left on device")

    out = Full()
    t = Tracer(out, "json")
    d = Decoded("request", 1, "NoOperation", {}, 4)
    t.emit(1, d, 0.0, {})
    t.emit(1, d, 0.0, {})
    t.flush()
    assert t.failed == "OSError: [Errno 28] No space left on device"
    assert out.writes == 1 and t.lines == 0


def test_name_filter():
    f = NameFilter(only=["MapWindow,RENDER:*"], skip=["RENDER:Composite"])
    assert f("MapWindow") and f("RENDER:FillRectangles")
    assert not f("RENDER:Composite") and not f("CreateWindow")
    assert NameFilter()("Anything")
    assert not NameFilter(skip=["Any*"])("Anything")


def test_text_and_json_lines():
    atoms = {39: "WM_NAME", 31: "STRING"}
    d = Decoded("request", 18, "ChangeProperty",
                {"mode": 0, "window": 0x200003, "property": 39, "type": 31,
                 "data": {"format": 8, "data": "xlogo"}}, 32)
    assert format_text(1, d, atoms) == (
        '001:<:0018:   32: Request ChangeProperty mode=0 window=0x00200003 '
        'property=39("WM_NAME") type=31("STRING") data={format=8 data="xlogo"}')
    obj = json.loads(format_json(1, d, 12.5, atoms))
    assert obj == {"client": 1, "seq": 18, "dir": "request", "name": "ChangeProperty",
                   "fields": d.fields, "time": 12.5, "size": 32,
                   "atoms": {"39": "WM_NAME", "31": "STRING"}}
    setup_reply = Decoded("setup-reply", 0, "Setup", {"status": 1}, 100)
    assert json.loads(format_json(2, setup_reply, 1.0, {}))["dir"] == "reply"
    assert format_text(2, setup_reply, {}).startswith("002:>:0000:  100: Reply Setup")


def test_json_lines_of_values_the_fast_encoder_refuses():
    """orjson refuses ints beyond 64 bits and strings that are not valid Unicode; such a
    line still comes out, through the standard library's encoder."""
    class Odd:
        def __repr__(self) -> str:
            return "Odd()"

    d = Decoded("request", 3, "X", {"big": 1 << 70, "text": "\udc80", "odd": Odd(),
                                    "pair": (1, 2)}, 8)
    obj = json.loads(format_json(1, d, 1.5, {}))
    assert obj["fields"] == {"big": 1 << 70, "text": "\udc80", "odd": "Odd()", "pair": [1, 2]}
    plain = Decoded("request", 4, "Y", {"odd": Odd(), "pair": (1, 2), "nested": {"k": [3]}}, 8)
    assert format_json(1, plain, 2.0, {}) == (
        '{"client":1,"seq":4,"dir":"request","name":"Y","fields":{"odd":"Odd()","pair":[1,2],'
        '"nested":{"k":[3]}},"time":2.0,"size":8}')


def test_tracer_rejects_unknown_format():
    with pytest.raises(ValueError):
        Tracer(sys.stderr, "xml")


def test_json_names_atoms_in_nested_fields_and_lists():
    atoms = {39: "WM_NAME", 31: "STRING", 68: "WM_PROTOCOLS"}
    d = Decoded("event", 7, "ClientMessage",
                {"window": 5, "data": {"type": 68, "atoms": [39, 31, 12345]}, "target": True}, 32)
    obj = json.loads(format_json(1, d, 0.0, atoms))
    assert obj["atoms"] == {"68": "WM_PROTOCOLS", "39": "WM_NAME", "31": "STRING"}
    plain = Decoded("request", 8, "MapWindow", {"window": 39}, 8)  # 39 here is no atom
    assert "atoms" not in json.loads(format_json(1, plain, 0.0, atoms))
