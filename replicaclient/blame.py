"""What a replica did, read from the Twisted or AMP error it caused: :func:`blame` turns that
error into one of the same type that also names the replica (a
:class:`~replicaclient.errors.ReplicaFailed`)."""

from __future__ import annotations

from typing import cast

from twisted.internet import error as error_module
from twisted.protocols import amp

from .errors import ReplicaFailed

_named: dict[type, type[ReplicaFailed]] = {}


def blame(error: BaseException, replica: str) -> BaseException:
    """``error``, caused by ``replica``, as an error of the same type whose message
    names the replica and says what it did, e.g. ``tcp:127.0.0.1:7001 sent a
    malformed box (a key longer than 255 bytes)``."""
    if isinstance(error, ReplicaFailed):
        return error
    cls = type(error)
    named = _named.get(cls)
    if named is None:
        try:
            named = cast(type[ReplicaFailed], type(
                cls.__name__, (ReplicaFailed, cls),
                {"__module__": cls.__module__, "__qualname__": cls.__qualname__}))
        except TypeError:  # a type that cannot be mixed: say it in a ReplicaFailed
            named = ReplicaFailed
        _named[cls] = named
    found = cast(ReplicaFailed, named.__new__(named))
    if named is not ReplicaFailed:
        found.__dict__.update(getattr(error, "__dict__", {}))
    found.args = error.args
    if isinstance(error, OSError) and isinstance(found, OSError):  # slots, not __dict__
        found.errno, found.strerror, found.filename = error.errno, error.strerror, error.filename
    found.replica, found.did, found.cause = replica, what_it_did(error), error
    found.quote_cause = not isinstance(error, amp.TooLong)
    found.__traceback__ = error.__traceback__
    return found


def what_it_did(error: BaseException) -> str:
    """What a replica did to cause ``error``, in words."""
    if isinstance(error, amp.TooLong):
        if error.isLocal:
            return "was sent a value too long for AMP"
        what = "key longer than 255" if error.isKey else "value longer than 65535"
        return f"sent a malformed box (a {what} bytes)"
    if isinstance(error, amp.UnhandledCommand):
        return "does not know the command"
    if isinstance(error, amp.UnknownRemoteError):
        return "raised an error the command does not declare"
    if isinstance(error, amp.RemoteAmpError):
        return f"answered with error {error.errorCode!r}"
    if isinstance(error, amp.ProtocolSwitched | amp.NoEmptyBoxes | amp.IncompatibleVersions):
        return "broke the AMP protocol"
    if isinstance(error, ConnectionRefusedError | error_module.ConnectionRefusedError):
        return "refused the connection"
    if isinstance(error, error_module.ConnectionDone):
        return "closed the connection"
    if isinstance(error, error_module.ConnectError):
        return "could not be connected to"
    if isinstance(error, error_module.ConnectionLost | ConnectionError):
        return "lost the connection"
    if isinstance(error, TimeoutError | error_module.TimeoutError):
        return "did not answer in time"
    if isinstance(error, KeyError | ValueError | TypeError):
        return "sent an answer that does not parse"
    return "failed"
