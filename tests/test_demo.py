"""`make demo` is a deliverable: it must run end to end and show the logo, in both its modes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from testing import netns
from testing.xserver import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["namespaces", "loopback"])
def test_demo_runs_end_to_end_and_the_screenshot_shows_xlogo(mode):
    for program in ("Xvfb", "xlogo", "xdotool"):
        require(program)
    env = dict(os.environ)
    if mode == "loopback":
        env["XT_DEMO_LOOPBACK"] = "1"
    elif netns.available() is not None:
        pytest.skip(str(netns.available()))
    result = subprocess.run([sys.executable, "-m", "demos.demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = "network namespaces" if mode == "namespaces" else "loopback"
    assert expected in result.stdout.splitlines()[1]
    path = re.search(r"screenshot of office's screen .*: (\S+\.png)", result.stdout).group(1)
    image = Image.open(path).convert("RGB")
    amber = sum(n for n, colour in image.getcolors(640 * 480) if colour == (0xFF, 0xB0, 0x00))
    assert amber > 10_000
    assert re.search(r"client 1: \d+ bytes in \d+ messages", result.stdout)
    assert "never the forged value" in result.stdout
