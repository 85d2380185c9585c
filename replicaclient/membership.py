"""Who the replicas are: a static list, or a live source of added/removed events.

A membership source is anything with ``subscribe(callback) -> unsubscribe``; the
callback receives :class:`Added` and :class:`Removed` events, the first ones for the
members already known. :class:`MembershipFeed` is one you drive by hand (tests, or
glue to any registry); ``replicaclient.discover`` feeds one from the discovery client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Added:
    """A replica ``name`` reachable at a Twisted client endpoint string, e.g.
    ``tcp:127.0.0.1:7001``. Added again with a new endpoint means it moved."""

    name: str
    endpoint: str


@dataclass(frozen=True)
class Removed:
    name: str


Event = Added | Removed
Listener = Callable[[Event], None]


class MembershipSource(Protocol):
    def subscribe(self, listener: Listener) -> Callable[[], None]: ...


class MembershipFeed:
    """A membership you change by calling :meth:`add` and :meth:`remove`."""

    def __init__(self, members: dict[str, str] | None = None) -> None:
        self.members: dict[str, str] = dict(members or {})
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        for name, endpoint in list(self.members.items()):
            listener(Added(name, endpoint))

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def add(self, name: str, endpoint: str) -> None:
        if self.members.get(name) == endpoint:
            return
        self.members[name] = endpoint
        self._emit(Added(name, endpoint))

    def remove(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self._emit(Removed(name))

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)


def static(endpoints: list[str]) -> MembershipFeed:
    """A fixed membership; each replica is named by its endpoint string."""
    return MembershipFeed({endpoint: endpoint for endpoint in endpoints})
