"""Real X servers for tests; a missing program skips with the reason (a failure in CI)."""

from __future__ import annotations

import shutil

import pytest

from testing.xvfb import Xvfb, start_xvfb

__all__ = ["Xvfb", "require", "start_xvfb"]


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (make install brings it)")
    return path
