"""The reactor the `xproxy` commands are given: Twisted's interfaces combined, as in
`xproxy.relay.reactor` (which says why). No reactor declares it; every reactor Twisted ships
fits at run time."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorCore, IReactorProcess

from discovery.reactor import IClientReactor

from ..relay.reactor import IRelayReactor


class ICommandReactor(IRelayReactor, IClientReactor, IReactorCore, IReactorProcess):
    """What the commands use: a proxy display, the discovery client (`@NAME` targets,
    `displays`), the reactor's start and shutdown triggers, and the command they run as a
    child process."""


__all__ = ["ICommandReactor"]
