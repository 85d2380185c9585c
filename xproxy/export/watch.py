"""The export's watching connection to the display host's X server (x11/watch.py is its pure
core): it tells every app host whose HELLO asked for it, in a CHANGED link frame, which root
properties and groups of extension answers changed, so that they may answer those requests
from their caches in between.

A CHANGED frame's object: `{"props": [atom, ...], "groups": ["randr", "xkb", ...]}` for a
change, `{"stop": reason}` when the watch ended (the app host then forgets and stops answering
what it vouched for). The HELLO's `"watch"` lists the groups watched ("props" for the root
properties)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import ITransport
from twisted.logger import Logger

from ..link.protocol import MAX_PAYLOAD
from ..x11.errors import X11ProtocolError
from ..x11.watch import Change, DisplayWatch, merge

log = Logger(namespace="xproxy.export")

#: Seconds the watch may take to be in force before the export goes on without it.
WATCH_TIMEOUT = 10.0


class WatchError(Exception):
    """The watch could not be set up; the message says why."""


class DisplayWatcher(protocol.Protocol):
    """The adapter: bytes to and from the X server; `ready` fires once every selection is in
    force; `on_change(change)` for each read that saw changes; `on_lost(why)` at the end."""

    def __init__(self, core: DisplayWatch, on_change: Callable[[Change], None],
                 on_lost: Callable[[str], None]) -> None:
        self.core = core
        self.on_change = on_change
        self.on_lost = on_lost
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.closing = False

    def _transport(self) -> ITransport:
        transport = self.transport
        assert transport is not None  # connected: dataReceived and _end come after
        return transport

    def connectionMade(self) -> None:
        self._transport().write(self.core.start())

    def dataReceived(self, data: bytes) -> None:
        try:
            changes = self.core.receive(data)
        except X11ProtocolError as err:
            self._end(f"the X server broke the protocol: {err}")
            return
        out = self.core.data_to_send()
        if out:
            self._transport().write(out)
        if self.core.failed is not None:
            self._end(self.core.failed)
            return
        if self.core.ready and not self.ready.called:
            self.ready.callback(None)
        if changes:
            self.on_change(merge(changes))

    def _end(self, why: str) -> None:
        if not self.ready.called:
            self.ready.errback(WatchError(why))
        self.closing = True
        self._transport().loseConnection()
        self.on_lost(why)

    def stop(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        why = "the X server closed the watching connection"
        if not self.ready.called:
            self.ready.errback(WatchError(why))
        if not self.closing:
            self.closing = True
            self.on_lost(why)


async def start_watch(reactor: Any, endpoint: Any, auth_name: bytes, auth_data: bytes,
                      on_change: Callable[[Change], None], on_lost: Callable[[str], None],
                      timeout: float = WATCH_TIMEOUT) -> DisplayWatcher:
    """Connect, select, and return the watcher once every selection is in force."""
    watcher = DisplayWatcher(DisplayWatch(auth_name, auth_data), on_change, on_lost)
    try:
        await connectProtocol(endpoint, watcher)
    except Exception as err:
        raise WatchError(f"cannot connect to the X server: {err}") from err
    def late() -> None:
        if not watcher.ready.called:
            watcher._end(f"the X server did not answer within {timeout:g} s")

    call = reactor.callLater(timeout, late)
    try:
        await watcher.ready
    finally:
        if call.active():
            call.cancel()
    return watcher


def change_frame(change: Change) -> dict[str, Any]:
    """The CHANGED frame's object for a change (everything, if the list would not fit)."""
    info: dict[str, Any] = {"props": sorted(change.props), "groups": sorted(change.groups)}
    if 12 * len(change.props) > MAX_PAYLOAD // 2:
        info = {"all": True}
    return info


__all__ = ["DisplayWatcher", "WatchError", "change_frame", "start_watch"]
