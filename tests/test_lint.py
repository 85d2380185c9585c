"""The code passes `make lint` (ruff, and mypy over the pure cores) with the versions
pinned in pyproject.toml's test extras, so CI catches what a reviewer's linter would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_ruff():
    done = run("ruff", "check", "xproxy", "discovery", "replicaclient")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_on_the_pure_cores():
    """The modules pyproject.toml's [tool.mypy] files lists: the pure cores of all three parts."""
    done = run("mypy", "--cache-dir", "/dev/null")
    assert done.returncode == 0, done.stdout + done.stderr
