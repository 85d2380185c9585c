"""A lookup on discoveryd's local API with the standard library only, blocking: for short-lived
commands that must not pay a quarter of a second to import Twisted first (`xproxy run`).
Everything else uses the Twisted client (client.py), which also registers and watches."""

from __future__ import annotations

import json
import os
import socket as _socket
import time
from typing import Any

from discovery.config import default_socket_path
from discovery.wire import LineSplitter, encode


class LookupFailed(Exception):
    """The daemon could not be asked, or refused; the message says which and why."""

    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


def lookup(type: str, name: str | None = None, *, wait: float | None = None,
           socket: str | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The services of `type` (named `name`) the daemon knows, as it reports them (`name`,
    `host`, `addresses`, `port`, `txt`, `source`); waits up to `wait` seconds for the LAN
    on a type the daemon is not browsing yet. The answer may be of any length; `timeout`
    (plus `wait`) bounds the whole exchange."""
    path = socket or default_socket_path(os.environ, os.getuid())
    request: dict[str, Any] = {"id": 1, "op": "lookup", "type": type}
    if name is not None:
        request["name"] = name
    if wait is not None:
        request["wait"] = wait
    budget = timeout + (wait or 0.0)
    deadline = time.monotonic() + budget
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
        lines = LineSplitter()  # no length cap: the answer grows with the services known
        try:
            s.settimeout(budget)
            s.connect(path)
            s.sendall(encode(request))
            while True:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise LookupFailed("discoveryd closed the connection without an answer")
                for line in lines.receive_data(chunk):
                    reply = _reply(line)
                    if reply is not None:
                        return reply
        except TimeoutError:
            raise LookupFailed(f"discoveryd did not answer within {budget:g} s") from None
        except OSError as err:
            raise LookupFailed(f"{path}: {err}") from None


def _reply(line: bytes) -> list[dict[str, Any]] | None:
    try:
        body = json.loads(line)
    except ValueError:
        raise LookupFailed("discoveryd sent a line that is not JSON") from None
    if not isinstance(body, dict):
        return None
    if body.get("id") is None and body.get("ok") is False:  # about no request: e.g. a refused connection
        err = body.get("error") or {}
        raise LookupFailed(str(err.get("message", "refused")), str(err.get("code", "error")))
    if body.get("id") != 1:
        return None  # not the answer to our request (an event)
    if not body.get("ok"):
        err = body.get("error") or {}
        raise LookupFailed(str(err.get("message", "refused")), str(err.get("code", "error")))
    services = body.get("services")
    if not isinstance(services, list):
        raise LookupFailed("discoveryd's answer has no list of services")
    return [s for s in services if isinstance(s, dict)]
