"""The control socket of a movable display: JSON lines, one request per line, one reply per
line, at `$XDG_RUNTIME_DIR/xproxy/movable/<P>.sock` (directory 0700):

    {"op": "move", "to": ":3"}  ->  {"ok": true, "clients": N, "seconds": S}
                                    {"ok": false, "error": "<reason>"}
    {"op": "describe"}          ->  {"ok": true, "display": ":P", "target": ..., "since": ...,
                                     "clients": [{"id", "wm_class", "pid", "name"}, ...],
                                     "geometry": [w, h], "depth": d}
    {"op": "count"}             ->  {"ok": true, "clients": N}

`socket_path` and `request` use the standard library only, for the `xproxy move` command.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

#: A control request longer than this is refused (the line is dropped with the connection).
MAX_LINE = 64 * 1024


def control_dir() -> str:
    """The directory of movable displays' control sockets, made 0700 (as run/paths.py
    makes the runtime directory: XDG_RUNTIME_DIR, else /tmp/xproxy-UID)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = (os.path.join(base, "xproxy", "movable") if base
            else f"/tmp/xproxy-{os.getuid()}/movable")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def socket_path(number: int) -> str:
    return os.path.join(control_dir(), f"{number}.sock")


def request(number: int, message: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Send one request to display :number's control socket and return its reply."""
    path = socket_path(number)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as err:
            raise ConnectionError(f":{number} is not a movable display ({err.strerror})") from err
        s.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionError(f"no answer from :{number}'s control socket")
    return json.loads(data)


def listen(reactor: Any, display: Any) -> Any:
    """Serve `display`'s (a MovableDisplay's) control socket: a Deferred firing with the
    listening port."""
    from twisted.internet import defer
    from twisted.internet.endpoints import UNIXServerEndpoint
    from twisted.internet.interfaces import ITransport
    from twisted.protocols.basic import LineOnlyReceiver

    class Control(LineOnlyReceiver):
        delimiter = b"\n"
        MAX_LENGTH = MAX_LINE
        transport: ITransport

        def lineReceived(self, line: bytes) -> None:
            defer.ensureDeferred(self._answer(line))

        async def _answer(self, line: bytes) -> None:
            try:
                req = json.loads(line)
            except ValueError as err:
                self._reply({"ok": False, "error": f"bad request: {err}"})
                return
            if not isinstance(req, dict):
                self._reply({"ok": False, "error": "bad request: not a JSON object"})
                return
            what = req.get("op")
            try:
                if what == "move" and isinstance(req.get("to"), str):
                    result = await display.move(req["to"])
                    if result.ok:
                        self._reply({"ok": True, "clients": result.clients,
                                     "seconds": round(result.seconds, 3)})
                    else:
                        self._reply({"ok": False, "error": result.error})
                elif what == "describe":
                    self._reply(await display.describe())
                elif what == "count":  # no X round trip, unlike describe: for polling
                    self._reply({"ok": True, "clients": len(display.clients)})
                else:
                    self._reply({"ok": False, "error": f"unknown request {line[:80]!r}"})
            except Exception as err:  # noqa: BLE001 - the caller gets the reason
                self._reply({"ok": False, "error": f"{type(err).__name__}: {err}"})

        def _reply(self, answer: dict[str, Any]) -> None:
            self.transport.write(json.dumps(answer).encode() + b"\n")

    from twisted.internet import protocol

    path = socket_path(display.number)
    if os.path.exists(path):
        os.unlink(path)
    factory = protocol.Factory.forProtocol(Control)
    factory.noisy = False
    return UNIXServerEndpoint(reactor, path, mode=0o600, wantPID=False).listen(factory)
