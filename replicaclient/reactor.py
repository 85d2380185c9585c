"""The reactor ``ReplicatedClient`` is given, as Twisted's own interfaces combined (as
`twisted.internet.reactor` is typed): timers for timeouts, hedging and reconnecting, TCP and
unix connections to the replicas, and the discovery client's when replicas are discovered.
No reactor declares it; it is for the type checker (mypy with the mypy-zope plugin), and every
reactor Twisted ships fits at run time."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTCP

from discovery.reactor import IClientReactor


class IReplicatedClientReactor(IClientReactor, IReactorTCP):
    """What ``ReplicatedClient`` uses of its reactor."""


__all__ = ["IReplicatedClientReactor"]
