"""How `xproxy` commands end on an error (cli/errors.py): one message on stderr, prefixed
`xproxy:`, and the exit status, both for the standard-library `run` client (a link target)
and for the commands run under the reactor (a local display target)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("target", ["xproxy://127.0.0.1:9", ":99"])
def test_run_without_a_command_is_a_usage_error(target: str, tmp_path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "xproxy.cli", "run", "--to", target, "--"],
                          check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "xproxy: no command given (xproxy run --to TARGET -- COMMAND ARGS...)")
