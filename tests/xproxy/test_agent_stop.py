"""How a link agent ends, and what the export makes of it (agent/link_agent.py, link BYE): an
agent that stops cleanly (lingered out, or SIGTERM) says BYE and the export drops the session
at once, without waiting for a resumption; an agent killed with SIGKILL leaves its session on
the resume path as before. And `run --verify-cache` reports its own run's counts. Real
processes: an export, a real Xvfb, the link agent `xproxy run` starts, real X programs."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import time

import pytest

from testing.wanlab import ROOT, WanLab
from testing.xserver import require
from xproxy.link.protocol import Bye, Closed, Link, LinkProtocolError

pytestmark = pytest.mark.timeout(120)

GRACE = 4.0


def _pair() -> tuple[Link, Link]:
    a, b = Link(), Link()
    a.hello({})
    b.hello({})
    b.receive_data(a.data_to_send())
    a.receive_data(b.data_to_send())
    return a, b


def test_bye_comes_after_the_closes_queued_with_it() -> None:
    a, b = _pair()
    a.open(1)
    b.receive_data(a.data_to_send())
    a.bye("idle")
    a.close(1, "idle")  # queued after the BYE, still sent before it
    assert b.receive_data(a.data_to_send()) == [Closed(1, "idle"), Bye("idle")]


@pytest.mark.parametrize("frame", [
    bytes([9]) + (1).to_bytes(4, "big") + (0).to_bytes(4, "big"),  # on a channel
    bytes([9, 0, 0, 0, 0]) + (2000).to_bytes(4, "big") + b"x" * 2000,  # too long
])
def test_a_bad_bye_is_a_protocol_error(frame: bytes) -> None:
    _, b = _pair()
    with pytest.raises(LinkProtocolError):
        b.receive_data(frame)


@pytest.fixture
def lab():
    require("Xvfb")
    with WanLab(delay_ms=0, export_args=("--link-grace", str(GRACE))) as lab:
        yield lab


def _export_log(lab: WanLab) -> str:
    with open(lab.export_log) as f:
        return f.read()


def _wait_for(what, timeout: float, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"timed out after {timeout} s"
        time.sleep(step)


def _agent_pid(lab: WanLab) -> int:
    found = glob.glob(os.path.join(lab.app_env["XDG_RUNTIME_DIR"], "xtransparency", "*.pid"))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return int(f.read())


def _agent_log_is_clean(lab: WanLab) -> None:
    found = glob.glob(os.path.join(lab.app_env["XDG_RUNTIME_DIR"], "xtransparency", "*.log"))
    for path in found:
        with open(path) as f:
            log = f.read()
        assert "critical" not in log and "Traceback" not in log, log[-2000:]


def _windows(lab: WanLab, cls: str) -> bool:
    return subprocess.run(["xdotool", "search", "--onlyvisible", "--class", cls],
                          env=lab.display_env, capture_output=True, check=False).returncode == 0


def _no_resume_wait(lab: WanLab) -> None:
    """The export dropped the session when told: past its grace, nothing waited for it."""
    time.sleep(GRACE + 1.5)  # (what is checked is that something did NOT happen in that time)
    log = _export_log(lab)
    assert "keeping its" not in log and "not resumed within" not in log, log[-3000:]


def test_an_agent_that_lingers_out_says_bye_and_the_export_keeps_nothing(lab) -> None:
    r = lab.run(["xdpyinfo"], "--linger", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    _wait_for(lambda: "ended by the app host (idle)" in _export_log(lab), 30)
    _no_resume_wait(lab)
    _agent_log_is_clean(lab)


def test_an_agent_stopped_with_sigterm_says_bye_and_its_clients_end_at_once(lab) -> None:
    require("xdotool")
    require("xlogo")
    xlogo = subprocess.Popen(lab.run_argv(["xlogo"]), env=lab.app_env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _windows(lab, "XLogo"), 30, step=0.1)
        pid = _agent_pid(lab)
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 20)
        assert xlogo.wait(20) != 0  # its channel was closed
        _wait_for(lambda: "ended by the app host (terminated)" in _export_log(lab), 10)
        _wait_for(lambda: not _windows(lab, "XLogo"), 10, step=0.1)
    finally:
        if xlogo.poll() is None:
            xlogo.kill()
            xlogo.wait()
    _no_resume_wait(lab)
    _agent_log_is_clean(lab)


def test_an_agent_killed_outright_leaves_its_session_to_the_resume_path(lab) -> None:
    require("xdotool")
    require("xlogo")
    xlogo = subprocess.Popen(lab.run_argv(["xlogo"]), env=lab.app_env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _windows(lab, "XLogo"), 30, step=0.1)
        os.kill(_agent_pid(lab), signal.SIGKILL)
        _wait_for(lambda: f"keeping its 1 X connections for {GRACE:g} s" in _export_log(lab),
                  20)
        assert _windows(lab, "XLogo")  # kept for a resumption
        _wait_for(lambda: f"not resumed within {GRACE:g} s" in _export_log(lab), GRACE + 20)
        _wait_for(lambda: not _windows(lab, "XLogo"), 10, step=0.1)
        assert "ended by the app host" not in _export_log(lab)
    finally:
        if xlogo.poll() is None:
            xlogo.kill()
            xlogo.wait()


VERIFY = re.compile(r"verify-cache: (\d+) answers compared with the server's, (\d+) mismatches")


def test_verify_cache_reports_each_runs_own_count(lab) -> None:
    counts = []
    for _ in range(3):
        r = lab.run(["xdpyinfo"], "--verify-cache")
        assert r.returncode == 0, r.stderr[-2000:]
        m = VERIFY.search(r.stderr)
        assert m, r.stderr[-2000:]
        counts.append(int(m.group(1)))
        assert m.group(2) == "0", r.stderr[-2000:]
    total = lab.agent_stats("--verify-cache")["compared"]
    assert counts[1] > 0 and counts[2] > 0, counts  # a warm cache answers xdpyinfo
    assert sum(counts) == total, (counts, total)  # each run its own share of the total
