"""Membership from the discovery client: replicas appearing and disappearing under a
DNS-SD service type (``_kv._tcp``) become Added / Removed events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from .membership import Added, Listener, Removed

if TYPE_CHECKING:
    from discovery.reactor import IClientReactor


def endpoint_for(host: str, addresses: tuple[str, ...] | list[str], port: int) -> str:
    """A Twisted client endpoint string for a discovered service, IPv4 first."""
    candidates = list(addresses) or [host]
    chosen = next((a for a in candidates if ":" not in a), candidates[0])
    return f"tcp:{chosen.replace(':', chr(92) + ':')}:{port}"


class DiscoveryMembership:
    """A membership source following ``discovery.client.watch(service_type)``."""

    def __init__(self, reactor: IClientReactor | None, service_type: str,
                 socket: str | None = None) -> None:
        self.reactor = reactor
        self.service_type = service_type
        self.socket = socket

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        from discovery import client  # imported late: only clients that discover need it

        def on_event(event: Any) -> None:
            record = event.service
            if event.kind == "removed":
                listener(Removed(record.name))
            else:
                listener(Added(record.name,
                               endpoint_for(record.host, record.addresses, record.port)))

        watch = client.watch(self.service_type, on_event, socket=self.socket,
                             reactor=self.reactor)

        def unsubscribe() -> None:
            defer.ensureDeferred(watch.close())

        return unsubscribe


def discovery_membership(reactor: IClientReactor, service_type: str) -> DiscoveryMembership:
    return DiscoveryMembership(reactor, service_type)
