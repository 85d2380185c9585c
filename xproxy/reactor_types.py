"""The reactor xproxy's adapters are given, as Twisted's own interfaces.

A function that needs one capability of the reactor takes that interface (`IReactorTime`,
`IReactorProcess`...). Where it needs several, it takes one of the interfaces below: each only
combines Twisted's, the way `twisted.internet.reactor` is typed (`_IReactorCommon`). No reactor
declares them; they are for the type checker (mypy with the mypy-zope plugin), and any reactor
providing the interfaces they combine (every reactor Twisted ships, `task.Clock` for the
time-only ones) fits at run time.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
)

from discovery.reactor import IClientReactor


class IRelayReactor(IReactorTime, IReactorTCP, IReactorUNIX):
    """What a proxy display uses: timers, and listening and connecting over TCP and unix
    sockets."""


class ILinkReactor(IRelayReactor, IClientReactor, IReactorCore):
    """What the link's ends (the agent, the export) use: a proxy display, the discovery
    client, and the reactor's shutdown triggers."""


class ICommandReactor(ILinkReactor, IReactorProcess):
    """What the `xproxy` commands use: all of the above, and the command they run as a child
    process."""


__all__ = ["ICommandReactor", "ILinkReactor", "IRelayReactor"]
