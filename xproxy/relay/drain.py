"""Waiting for connections to finish on shutdown, by polling a condition on the reactor's
clock: what `xproxy serve`'s run and the export wait for before closing what is left."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

#: How often the condition is looked at, in seconds.
POLL_INTERVAL = 0.02


async def drain(reactor: IReactorTime, done: Callable[[], bool], timeout: float,
                interval: float = POLL_INTERVAL) -> bool:
    """Wait until `done()` is true, for at most `timeout` seconds; whether it became true."""
    from twisted.internet import task

    for _ in range(int(timeout / interval)):
        if done():
            return True
        await task.deferLater(reactor, interval, lambda: None)
    return done()
