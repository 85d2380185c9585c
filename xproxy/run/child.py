"""Running the user's command under the reactor and waiting for its exit status."""

from __future__ import annotations

from twisted.internet import defer, protocol


class _Child(protocol.ProcessProtocol):
    def __init__(self, ended: defer.Deferred[int]) -> None:
        self.ended = ended

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        code = reason.value.exitCode
        if code is None:
            code = 128 + (reason.value.signal or 0)
        self.ended.callback(code)


async def run_command(reactor, argv: list[str], env: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    """Run argv with our stdin/stdout/stderr; its exit status (128+N when killed by signal N,
    127 when it cannot be started, as shells report)."""
    import shutil
    import sys

    path = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    ended: defer.Deferred[int] = defer.Deferred()
    try:
        reactor.spawnProcess(_Child(ended), path, argv, env=env, childFDs={0: 0, 1: 1, 2: 2})
    except OSError as err:
        print(f"xproxy: cannot run {argv[0]}: {err}", file=sys.stderr)
        return 127
    return await ended
