"""The reactor discovery's adapters are given, as Twisted's own interfaces.

A function that needs one capability of the reactor takes that interface (`IReactorTime`...).
Where it needs several, it takes one of the interfaces below: each only combines Twisted's, the
way `twisted.internet.reactor` is typed (`_IReactorCommon`). No reactor declares them; they are
for the type checker (mypy with the mypy-zope plugin), and any reactor providing the interfaces
they combine (every reactor Twisted ships) fits at run time.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorProcess,
    IReactorTCP,
    IReactorTime,
    IReactorUNIX,
)


class IClientReactor(IReactorTime, IReactorUNIX):
    """What the client library uses: the daemon's unix socket, and timers for timeouts and
    reconnecting."""


class ISuperserverReactor(IReactorTime, IReactorFDSet, IReactorProcess):
    """What an on-demand service uses: its listening socket watched for readers, the child
    started on the first one, timers for pausing a service that keeps failing."""


class IEtcdReactor(IReactorTime, IReactorTCP):
    """What the etcd backend uses: HTTP connections to the gateway, timers for leases and
    watches."""


class IDaemonReactor(IClientReactor, ISuperserverReactor, IEtcdReactor, IReactorCore,
                     IReactorFromThreads):
    """What `discoveryd` and the `discovery` command use: all of the above, the reactor's
    shutdown triggers, and calls from signal handlers."""


__all__ = ["IClientReactor", "IDaemonReactor", "IEtcdReactor", "ISuperserverReactor"]
