"""Errors the stub adds to those one AMP server can raise.

Everything else a call can fail with is what ``amp.AMP.callRemote`` would have raised
against one server: the command's declared errors, ``UnknownRemoteError``, connection
errors. Those a replica caused also name it and what it did (:func:`blame`): they are
instances of both their own type and :class:`ReplicaFailed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from twisted.internet import error as error_module
from twisted.protocols import amp


class ReplicationError(Exception):
    """Base of the errors only a replicated call can produce."""


class NoQuorum(ReplicationError):
    """No answer reached the policy's threshold, and none can any more.

    ``replies`` maps each replica to what it said (an answer, an error, or why it said
    nothing), so a person reading the error sees the disagreement itself.
    """

    def __init__(self, command: str, threshold: int, replies: Mapping[str, str],
                 reason: str = "") -> None:
        self.command = command
        self.threshold = threshold
        self.replies = dict(replies)
        self.reason = reason
        said = "; ".join(f"{name}: {text}" for name, text in sorted(self.replies.items()))
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"no quorum for {command}: {threshold} matching answers needed{why}; {said}"
        )


class NoReplicas(ReplicationError):
    """There was no replica to send the call to (empty membership, all closed)."""


class DeadlineExceeded(ReplicationError, TimeoutError):
    """The call's single deadline, covering every attempt, passed without an answer."""


class ClientClosed(ReplicationError):
    """The stub was closed before the call could finish."""


class ReplicaFailed(ReplicationError):
    """Mixed into an error a replica caused, so that it names the replica and what it
    did (``replica``, ``did``, ``cause``) while staying an instance of the type one AMP
    connection would have raised (see :func:`blame`)."""

    replica: str = ""
    did: str = "failed"
    cause: BaseException | None = None

    def __str__(self) -> str:
        cause = self.cause
        text = str(cause) if cause is not None else ""
        if isinstance(cause, amp.TooLong):
            text = ""  # its repr is the whole value; did says what was too long
        return f"{self.replica} {self.did}" + (f": {text}" if text else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


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
    found = cast(ReplicaFailed, named.__new__(named))  # type: ignore[call-overload]
    if named is not ReplicaFailed:
        found.__dict__.update(getattr(error, "__dict__", {}))
    found.args = error.args
    if isinstance(error, OSError) and isinstance(found, OSError):  # slots, not __dict__
        found.errno, found.strerror, found.filename = error.errno, error.strerror, error.filename
    found.replica, found.did, found.cause = replica, what_it_did(error), error
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
