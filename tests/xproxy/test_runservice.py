"""`xproxy run` through a link agent's control socket (agent/runservice.py, run/client.py): requests
checked, a warm run that never imports Twisted, tracing to stdout through a passed descriptor,
a killed run losing its display, a bad client on the control socket, and an agent that does
not linger out under a run whose program has no X connection open yet. Real processes: an
export, a real Xvfb and real X programs on loopback (testing/wanlab.py)."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require
from xproxy.agent.runservice import RunRequestError, parse_request

pytestmark = pytest.mark.timeout(120)

GOOD = {"op": "display", "xauthority": "/tmp/x/Xauthority", "label": "@office",
        "hide_ext": ["XVideo"], "trace": {"format": "json", "only": ["MapWindow"], "skip": []}}


def test_a_good_request_is_parsed() -> None:
    req = parse_request(json.dumps(GOOD).encode())
    assert req == {"xauthority": "/tmp/x/Xauthority", "label": "@office", "hide_ext": ["XVideo"],
                   "trace": GOOD["trace"], "stats": False}


@pytest.mark.parametrize("change, match", [
    (None, "bad JSON"),
    ({"op": "shell"}, "expected"),
    ({"xauthority": "relative/Xauthority"}, "absolute"),
    ({"xauthority": 3}, "absolute"),
    ({"hide_ext": "XVideo"}, "hide_ext"),
    ({"hide_ext": [1]}, "hide_ext"),
    ({"trace": {"format": "xml"}}, "trace"),
    ({"trace": {"format": "text", "only": [3]}}, "only"),
])
def test_bad_requests_are_refused_with_a_reason(change, match) -> None:
    line = b"{not json" if change is None else json.dumps({**GOOD, **change}).encode()
    with pytest.raises(RunRequestError, match=match):
        parse_request(line)


def test_the_run_path_imports_no_twisted() -> None:
    """What `xproxy run` imports before it knows whether an agent answers: the standard
    library only (Twisted's reactor alone costs a quarter of a second to import)."""
    code = ("import sys; from xproxy.cli import main; import xproxy.run.client; "
            "main.build_parser().parse_args(['run', '--to', '@x', '--', 'true']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'OpenSSL', 'cryptography', 'zope')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def lab():
    require("Xvfb")
    with WanLab(delay_ms=0) as lab:
        yield lab


def _control(lab: WanLab) -> str:
    lab.run(["true"])  # the agent up
    found = glob.glob(os.path.join(lab.app_env["XDG_RUNTIME_DIR"], "xtransparency", "*.ctl"))
    assert len(found) == 1, found
    return found[0]


def test_trace_to_stdout_arrives_through_the_passed_descriptor(lab) -> None:
    r = lab.run(["xdpyinfo"], "--trace", "-", "--trace-format", "json", "--only",
                "QueryExtension")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines and all(x["name"] == "QueryExtension" for x in lines)
    assert {x["dir"] for x in lines} == {"request", "reply"}
    assert "name of display:" in r.stdout  # xdpyinfo's own output shares stdout


def test_trace_to_a_file_named_relative_to_the_run(lab, tmp_path) -> None:
    argv = [*lab.run_argv(["xdpyinfo"]), ][:]
    at = argv.index("run") + 1
    argv[at:at] = ["--trace", "trace.txt"]
    r = subprocess.run(argv, env=dict(lab.app_env, PYTHONPATH=ROOT), cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    text = (tmp_path / "trace.txt").read_text()
    assert "Reply ListExtensions" in text and "MIT-SHM" not in text  # hidden, as always


def test_a_killed_run_loses_its_display_and_the_agent_serves_on(lab) -> None:
    ctl = _control(lab)
    p = subprocess.Popen(lab.run_argv(["sh", "-c", 'echo "$DISPLAY"; exec sleep 60']),
                         env=lab.app_env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        display = p.stdout.readline().strip()  # type: ignore[union-attr]
        assert display.startswith(":")
        path = f"/tmp/.X11-unix/X{display[1:]}"
        assert os.path.exists(path)
        os.kill(p.pid, signal.SIGKILL)  # the run only; its sleep goes on, orphaned
        p.wait(10)
        deadline = time.monotonic() + 10
        while os.path.exists(path):
            assert time.monotonic() < deadline, f"{path} outlived its run"
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
    assert os.path.exists(ctl)
    r = lab.run(["xdpyinfo"])
    assert r.returncode == 0, r.stderr[-2000:]


def test_garbage_on_the_control_socket_gets_an_error_and_the_agent_serves_on(lab) -> None:
    ctl = _control(lab)
    for garbage in (b"\x00\xff garbage\n", b'{"op": "display", "xauthority": "x"}\n',
                    b"x" * 70000):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(ctl)
            s.sendall(garbage)
            reply = s.makefile("rb").readline()
            assert json.loads(reply)["ok"] is False, reply
    r = lab.run(["xdpyinfo"])
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_agent_does_not_linger_out_under_a_run_without_x_connections() -> None:
    """A run holds its agent: a program that waits before it opens the display finds it
    there after the linger time, and the agent goes that long after the run ends."""
    require("Xvfb")
    with WanLab(delay_ms=0) as lab:
        r = lab.run(["sh", "-c", "sleep 1.5; xdpyinfo >/dev/null && echo shown"], "--linger",
                    "0.5")
        assert r.returncode == 0 and "shown" in r.stdout, r.stderr[-2000:]
        pidfiles = glob.glob(os.path.join(lab.app_env["XDG_RUNTIME_DIR"], "xtransparency",
                                          "*.pid"))
        assert len(pidfiles) == 1, pidfiles
        with open(pidfiles[0]) as f:
            pid = int(f.read())
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}"):
            assert time.monotonic() < deadline, "the agent did not linger out"
            time.sleep(0.1)
        base = pidfiles[0][: -len(".pid")]
        assert not os.path.exists(pidfiles[0]) and not os.path.exists(base + ".sock")
        with open(base + ".log") as f:
            log = f.read()
        assert "critical" not in log and "Traceback" not in log, log[-2000:]
