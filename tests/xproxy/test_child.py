"""Running the user's command (run/child.py): both ways of waiting, blocking in the run client
and under the reactor for a local display, report a status as shells do."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xproxy.run.child import run_command

CASES = [
    (["sh", "-c", "exit 3"], 3),
    (["sh", "-c", "kill -TERM $$"], 128 + 15),
    (["no-such-program-xproxy-test"], 127),
]

UNDER_REACTOR = """
import json, os, sys
from twisted.internet import defer, task
from xproxy.run.child import spawn_command

def main(reactor):
    async def go():
        print(json.dumps(await spawn_command(reactor, json.loads(sys.argv[1]), dict(os.environ))))
    return defer.ensureDeferred(go())

task.react(main)
"""


@pytest.mark.parametrize(("argv", "status"), CASES)
def test_blocking_status(argv: list[str], status: int) -> None:
    assert run_command(argv, {"PATH": "/usr/bin:/bin"}) == status


@pytest.mark.parametrize(("argv", "status"), CASES)
def test_status_under_the_reactor(argv: list[str], status: int) -> None:
    done = subprocess.run([sys.executable, "-c", UNDER_REACTOR, json.dumps(argv)], check=True,
                          capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout) == status
