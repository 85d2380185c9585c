"""Running the user's command on the display and waiting for its exit status, as shells
report it: the status it exited with, 128+N when killed by signal N, 127 when it cannot be
started. Two ways to wait, one convention: `run_command` blocks (the standard-library-only run
client, which passes SIGTERM and SIGHUP on to the command), `spawn_command` waits under the
reactor (a local display served by this same process, whose reactor keeps its own signal
handlers). Importing this module loads the standard library only."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorProcess
    from twisted.python.failure import Failure

#: The status of a command that could not be started, as shells report it.
CANNOT_RUN = 127


def _program(argv: list[str], env: dict[str, str]) -> str:
    """The executable for argv[0], looked up in the command's own PATH."""
    return shutil.which(argv[0], path=env.get("PATH")) or argv[0]


def _cannot_run(argv: list[str], err: OSError) -> int:
    print(f"xproxy: cannot run {argv[0]}: {err}", file=sys.stderr)
    return CANNOT_RUN


def _killed(signum: int) -> int:
    return 128 + signum


def run_command(argv: list[str], env: dict[str, str]) -> int:
    """Run argv with our stdin/stdout/stderr and wait; its exit status. SIGTERM and SIGHUP sent
    to us are passed on; SIGINT and SIGQUIT from the terminal reach the command by themselves."""
    try:
        child = subprocess.Popen(argv, executable=_program(argv, env), env=env)
    except OSError as err:
        return _cannot_run(argv, err)

    def forward(signum: int, frame: Any) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    old.update({s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)})
    try:
        code = child.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return _killed(-code) if code < 0 else code


async def spawn_command(reactor: IReactorProcess, argv: list[str], env: dict[str, str]) -> int:
    """Run argv with our stdin/stdout/stderr under the reactor (which goes on serving the
    command's display); its exit status."""
    from twisted.internet import defer, protocol

    class Child(protocol.ProcessProtocol):
        def processEnded(self, reason: Failure) -> None:
            code = reason.value.exitCode
            ended.callback(_killed(reason.value.signal or 0) if code is None else code)

    ended: defer.Deferred[int] = defer.Deferred()
    try:
        reactor.spawnProcess(Child(), _program(argv, env), argv, env=env,
                             childFDs={0: 0, 1: 1, 2: 2})
    except OSError as err:
        return _cannot_run(argv, err)
    return await ended
