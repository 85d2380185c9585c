"""Errors the stub adds to those one AMP server can raise.

Everything else a call can fail with is what ``amp.AMP.callRemote`` would have raised
against one server: the command's declared errors, ``UnknownRemoteError``, connection
errors. Those a replica caused also name it and what it did
(:func:`replicaclient.blame.blame`): they are instances of both their own type and
:class:`ReplicaFailed`. The types here import nothing of Twisted, so the policies can raise
them.
"""

from __future__ import annotations

from collections.abc import Mapping


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
    connection would have raised (see :func:`replicaclient.blame.blame`). ``quote_cause``
    is false when the cause's text would say nothing ``did`` does not (``amp.TooLong``'s is
    the whole value)."""

    replica: str = ""
    did: str = "failed"
    cause: BaseException | None = None
    quote_cause: bool = True

    def __str__(self) -> str:
        cause = self.cause
        text = str(cause) if cause is not None and self.quote_cause else ""
        return f"{self.replica} {self.did}" + (f": {text}" if text else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"
