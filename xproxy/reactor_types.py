"""What the adapters use of the reactor they are given, as typing Protocols: Twisted's own
interfaces (IReactorTime, ...) are zope interfaces, which mypy does not read as types. The
real reactor, `task.Clock` and `MemoryReactorClock` all fit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class DelayedCall(Protocol):
    """A call `callLater` arranged (twisted.internet.interfaces.IDelayedCall)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The reactor's time (IReactorTime): what pure-ish adapters and timers need."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,
                  **kw: Any) -> DelayedCall: ...


class Reactor(Clock, Protocol):
    """A reactor an adapter connects and listens with (IReactorTCP, IReactorSSL,
    IReactorUNIX through Twisted's endpoints, which take it as it is), with its time and
    its system events (IReactorCore)."""

    def addSystemEventTrigger(self, phase: str, eventType: str, callable: Callable[..., Any],
                              *args: Any, **kw: Any) -> Any: ...


__all__ = ["Clock", "DelayedCall", "Reactor"]
