"""Errors a replica caused keep their type and name the replica and what it did."""

from __future__ import annotations

import pytest
from twisted.internet import error
from twisted.protocols import amp

from replicaclient.blame import blame
from replicaclient.errors import ReplicaFailed


@pytest.mark.parametrize(("cause", "text"), [
    (amp.TooLong(True, False, None, None),
     "r1 sent a malformed box (a key longer than 255 bytes)"),
    (ConnectionRefusedError(111, "refused"), "r1 refused the connection: [Errno 111] refused"),
    (error.ConnectionDone(), "r1 closed the connection: Connection was closed cleanly."),
    (amp.UnknownRemoteError("bug"),
     "r1 raised an error the command does not declare: Code<UNKNOWN>: bug"),
    (KeyError("value"), "r1 sent an answer that does not parse: 'value'"),
    (TimeoutError("no answer within the call's deadline"),
     "r1 did not answer in time: no answer within the call's deadline"),
])
def test_blame_keeps_the_type_and_names_the_replica(cause, text):
    found = blame(cause, "r1")
    assert isinstance(found, type(cause)) and isinstance(found, ReplicaFailed)
    assert type(found).__name__ == type(cause).__name__
    assert str(found) == text and repr(found) == f"{type(cause).__name__}({text!r})"
    assert found.cause is cause and found.replica == "r1"
    assert blame(found, "r2") is found  # named once, by the replica that caused it


def test_blame_keeps_what_callers_read_from_the_original():
    found = blame(ConnectionRefusedError(111, "refused"), "r1")
    assert found.errno == 111
    too_long = blame(amp.TooLong(False, False, b"v", b"k"), "r1")
    assert too_long.keyName == b"k" and not too_long.isKey
