"""A link agent's control socket: each `xproxy run` asks it for a display of its own.

The agent process already holds the link, the X cache and a warm reactor, so the display a
program talks to (its own number, a fresh cookie in the run's private Xauthority, its own
trace) is served here, and `xproxy run` itself stays a small process that needs neither
Twisted nor a TLS handshake (run/client.py). One connection per run, newline-delimited JSON:

    run   -> {"op": "display", "xauthority": PATH, "label": "@office", "hide_ext": [NAME...],
              "trace": null | {"format": "text"|"json"|"perfetto", "only": [...], "skip": [...]},
              "stats": false}   (true: the agent's counters are written before it answers "done")
             (with "trace", the file to write it to arrives with this message as a passed
              file descriptor, so a run may trace to its stdout or to a file only it can open;
              "perfetto" writes the run's waits there, observe/waits.py, when it is done)
    agent -> {"ok": true, "display": ":12"}   or   {"ok": false, "error": "why"}
    run   -> {"op": "done"}                      (the program has exited)
    agent -> {"ok": true}                        (its connections drained; the display is gone)
             with "stats": {"compared": N, "mismatches": M, "mismatch_log": [...], ...}
             when asked for: what this run's own X connections did in the suppressor

A run whose connection drops without "done" loses its display at once. While a run is
connected the agent does not linger out, even when the program has no X connection open.

A session (session/agent.py) that shows its programs through this agent asks instead

    session -> {"op": "hold", "xauthority": PATH}
    agent   -> {"ok": true, "socket": PATH, "display": ":N"}  (a display of its own relaying
               to the link, its cookie written to the Xauthority file named, else the default)

and keeps the connection open for as long as it relays to PATH: the link stays up meanwhile,
and no display of the agent's own sits between the session and the link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IFileDescriptorReceiver, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from ..reactor_types import ILinkReactor
from ..relay.server import ProxyServer, ServeOptions, StartError
from .upstream import RunCounts

log = Logger(namespace="xproxy.agent")

MAX_LINE = 64 * 1024


class RunRequestError(ValueError):
    """A request on the control socket that cannot be served; the reply says why."""


def parse_request(line: bytes) -> dict[str, Any]:
    """A run's display request, checked: what the agent may act on, or RunRequestError."""
    try:
        req = json.loads(line)
    except ValueError as err:
        raise RunRequestError(f"bad JSON: {err}") from None
    if not isinstance(req, dict) or req.get("op") != "display":
        raise RunRequestError("expected {\"op\": \"display\", ...} or {\"op\": \"hold\"}")
    xauthority = req.get("xauthority")
    if not isinstance(xauthority, str) or not os.path.isabs(xauthority):
        raise RunRequestError("xauthority must be an absolute path")
    hide = req.get("hide_ext", [])
    if not isinstance(hide, list) or not all(isinstance(h, str) for h in hide):
        raise RunRequestError("hide_ext must be a list of names")
    trace = req.get("trace")
    if trace is not None:
        if not isinstance(trace, dict) \
                or trace.get("format", "text") not in ("text", "json", "perfetto"):
            raise RunRequestError(
                "trace must be null or {\"format\": \"text\"|\"json\"|\"perfetto\", ...}")
        for key in ("only", "skip"):
            if not all(isinstance(x, str) for x in trace.get(key, [])):
                raise RunRequestError(f"trace {key} must be a list of names")
    label = req.get("label", "")
    return {"xauthority": xauthority, "hide_ext": hide, "trace": trace,
            "label": label if isinstance(label, str) else "", "stats": req.get("stats") is True}


@implementer(IFileDescriptorReceiver)
class _RunControl(protocol.Protocol):
    def __init__(self, service: RunService) -> None:
        self.service = service
        self.buf = b""
        self.fds: list[int] = []
        self.server: ProxyServer | None = None
        self.instruments: Any = None
        self.state = "request"  # then "starting", "running", "stopping", "gone"; or "holding"
        self.wants_stats = False
        self.counts = RunCounts()  # what this run's X connections did in the suppressor

    def connectionMade(self) -> None:
        self.service.runs.add(self)
        self.service.hold()

    def fileDescriptorReceived(self, fd: int) -> None:
        if self.state != "request" or len(self.fds) >= 1:
            os.close(fd)
            return
        self.fds.append(fd)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            self._line(line)
        if len(self.buf) > MAX_LINE:
            self._reply({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            self._close()

    def _line(self, line: bytes) -> None:
        if self.state == "request" and _op(line) == "hold":
            self.state = "holding"
            defer.ensureDeferred(self._hold(line))
        elif self.state == "request":
            self.state = "starting"
            try:
                req = parse_request(line)
            except RunRequestError as err:
                self._reply({"ok": False, "error": str(err)})
                self._close()
                return
            self.wants_stats = req["stats"]
            defer.ensureDeferred(self._start(req))
        elif self.state == "running" and _op(line) == "done":
            self.state = "stopping"
            defer.ensureDeferred(self._finish())
        else:
            self._reply({"ok": False, "error": f"unexpected request while {self.state}"})
            self._close()

    async def _start(self, req: dict[str, Any]) -> None:
        from ..observe.instruments import Instruments

        trace = req["trace"]
        if trace is not None:
            if not self.fds:
                self._reply({"ok": False, "error": "trace asked for without a file descriptor"})
                self._close()
                return
            out = os.fdopen(self.fds.pop(), "w", buffering=1 << 16)
            self.instruments = Instruments(self.service.reactor.seconds, out,
                                           trace.get("format", "text"), trace.get("only", []),
                                           trace.get("skip", []), close_trace=True,
                                           link=True)
            self.counts.marks = self.instruments.answered
        options = ServeOptions(target=req["label"] or "link", xauthority=req["xauthority"],
                               hide_ext=req["hide_ext"])
        if self.instruments is not None:
            options.observers = self.instruments.observers
            options.on_client_done = self.instruments.client_done
        name = await self._open_display(options, "starting")
        if name is not None:
            self.state = "running"
            self._reply({"ok": True, "display": name})

    async def _open_display(self, options: ServeOptions, state: str) -> str | None:
        """A display relaying to the link, started while in `state`: its name, or None when it
        could not start (the requester told) or the requester went away meanwhile."""
        options.upstream = self.service.upstream(self.counts)
        options.upstream_auth = (b"", b"")
        self.server = ProxyServer(self.service.reactor, options)
        try:
            name = await self.server.start()
        except (StartError, OSError) as err:
            self.server = None
            self._reply({"ok": False, "error": str(err)})
            self._close()
            return None
        if self.state != state:  # the requester went away meanwhile
            await self._stop_display()
            return None
        return name

    async def _hold(self, line: bytes) -> None:
        """A session holds the link: it gets a display of its own relaying to the link (its
        cookie written to the Xauthority file the session names, else the default one), kept
        until the session's connection closes."""
        req = json.loads(line)
        xauthority = req.get("xauthority") or os.environ.get("XAUTHORITY") or \
            os.path.expanduser("~/.Xauthority")
        if not isinstance(xauthority, str) or not os.path.isabs(xauthority):
            self._reply({"ok": False, "error": "xauthority must be an absolute path"})
            self._close()
            return
        name = await self._open_display(ServeOptions(target="link", xauthority=xauthority),
                                         "holding")
        if name is not None:
            self._reply({"ok": True, "socket": f"/tmp/.X11-unix/X{name.lstrip(':')}",
                         "display": name})

    async def _finish(self) -> None:
        from twisted.internet import task

        if self.server is not None:
            await self.server.drain()
        await self._stop_display()
        reply: dict[str, Any] = {"ok": True}
        if self.wants_stats:  # --verify-cache reports this run's counts
            await task.deferLater(self.service.reactor, 0.05, lambda: None)  # type: ignore[arg-type]
            self.service.after_run()
            reply["stats"] = self.counts.report()
        self._reply(reply)
        self._close()

    async def _stop_display(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        if self.instruments is not None:
            self.counts.marks = None
            self.instruments.stop()
            self.instruments = None

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _reply(self, obj: dict[str, Any]) -> None:
        if self.transport is not None and self.connected:
            self.transport.write(json.dumps(obj).encode() + b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
        self.state = "gone"
        self.service.runs.discard(self)
        defer.ensureDeferred(self._stop_display()).addBoth(lambda _: self.service.release())


def _op(line: bytes) -> Any:
    try:
        req = json.loads(line)
    except ValueError:
        return None
    return req.get("op") if isinstance(req, dict) else None


class RunService:
    """Serves runs on `control`; each run's display relays to `upstream(counts)` (the link
    agent's in-process endpoint, agent/upstream.py), which adds what the run's connections
    did to `counts`. `hold` and `release` are the agent's liveness hooks (a run counts as a
    user of the link); `after_run` is called when a run's display has gone, before the run
    is told so."""

    def __init__(self, reactor: ILinkReactor, control: str,
                 upstream: Callable[[RunCounts], IStreamClientEndpoint],
                 hold: Callable[[], None] = lambda: None,
                 release: Callable[[], None] = lambda: None,
                 after_run: Callable[[], None] = lambda: None) -> None:
        self.reactor = reactor
        self.upstream = upstream
        self.control = control
        self.hold = hold
        self.release = release
        self.after_run = after_run
        self.runs: set[_RunControl] = set()
        self.port: Any = None

    async def start(self) -> None:
        from twisted.internet.endpoints import UNIXServerEndpoint

        if os.path.exists(self.control):
            os.unlink(self.control)
        factory = protocol.Factory.forProtocol(lambda: _RunControl(self))  # type: ignore[arg-type]
        factory.noisy = False
        self.port = await UNIXServerEndpoint(self.reactor, self.control, mode=0o600,
                                             wantPID=False).listen(factory)

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
            if os.path.exists(self.control):
                os.unlink(self.control)
        for run in list(self.runs):
            run._close()
