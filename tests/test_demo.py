"""`make demo` is a deliverable: it must run end to end and show the logo."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from PIL import Image

from .support.xserver import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_runs_end_to_end_and_the_screenshot_shows_xlogo():
    for program in ("Xvfb", "xlogo", "xdotool"):
        require(program)
    result = subprocess.run([sys.executable, "-m", "demos.demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    path = re.search(r"screenshot of the real display .*: (\S+\.png)", result.stdout).group(1)
    image = Image.open(path).convert("RGB")
    assert image.getpixel((320, 240)) != (0, 0, 0) or image.getpixel((200, 100)) != (0, 0, 0)
    assert "traffic through the proxy" in result.stdout
    assert re.search(r"client 1 closed: \d+ requests", result.stdout)
