"""The reactor a proxy display is given, as Twisted's own interfaces.

A function that needs one capability of the reactor takes that interface (`IReactorTime`,
`IReactorProcess`...). Where it needs several, it takes an interface that only combines
Twisted's, the way `twisted.internet.reactor` is typed (`_IReactorCommon`): `IRelayReactor`
here, `xproxy.run.reactor.ICommandReactor` for the commands. No reactor declares them; they are
for the type checker (mypy with the mypy-zope plugin), and any reactor providing the interfaces
they combine (every reactor Twisted ships) fits at run time.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUNIX


class IRelayReactor(IReactorTime, IReactorTCP, IReactorUNIX):
    """What a proxy display uses: timers, and listening and connecting over TCP and unix
    sockets."""


__all__ = ["IRelayReactor"]
