"""`xproxy run --to TARGET -- COMMAND` and `xproxy displays`: the app host's side.

TARGET is `@NAME` (an exported display found through the local discoveryd), `xproxy://HOST:PORT`
(an export reached directly), or a plain display name (a local relay, as `xproxy serve`).
For exports, the link to the display host is a shared agent process (see
agent/link_agent.py), started by the first `run` that needs it; each `run` gets a proxy display
of its own from it (see agent/runservice.py and run/client.py), with a fresh cookie in a
private Xauthority file, so commands never see another's cookie.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from ..relay.server import ProxyServer, ServeOptions, StartError
from ..trust import xauthfile
from ..x11.display import DisplayNameError, parse_display
from .child import spawn_command
from .paths import LINK_SERVICE_TYPE, RunError

if TYPE_CHECKING:
    from ..reactor_types import ICommandReactor

log = Logger(namespace="xproxy.run")


async def run(reactor: ICommandReactor, target: str, command: list[str],
              observers: Callable[[int], Any] | None = None,
              on_client_done: Callable[[Any], None] | None = None,
              hide_ext: list[str] | None = None) -> int:
    """`xproxy run` to a display of this host (a local relay with a cookie of its own);
    exports are reached through their link agent instead (run/client.py)."""
    workdir = tempfile.mkdtemp(prefix="xproxy-run-")
    private = os.path.join(workdir, "Xauthority")
    try:
        try:
            display = parse_display(target)
        except DisplayNameError as err:
            raise RunError(str(err)) from err
        found = xauthfile.lookup_for_display(display)
        options = ServeOptions(target=target, xauthority=private,
                               upstream_auth=(found.name, found.data) if found else (b"", b""))
        options.observers = observers
        options.on_client_done = on_client_done
        options.hide_ext = list(hide_ext or [])
        server = ProxyServer(reactor, options)
        try:
            name = await server.start()
        except StartError as err:
            raise RunError(str(err)) from err
        env = dict(os.environ, DISPLAY=name, XAUTHORITY=private)
        try:
            code = await spawn_command(reactor, command, env)
            await server.drain()
        finally:
            await server.stop()
        return code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def displays(reactor: ICommandReactor, probe: bool = True,
                   discovery_socket: str | None = None) -> list[dict[str, Any]]:
    """The exported displays on the LAN, each probed for whether this host may use it."""
    from discovery import client as discovery_client

    records = await discovery_client.lookup(LINK_SERVICE_TYPE, wait=1.0,
                                            socket=discovery_socket, reactor=reactor)
    found = []
    for rec in records:
        entry: dict[str, Any] = {
            "name": rec.name, "host": rec.host, "addresses": list(rec.addresses),
            "port": rec.port, "screen": rec.txt.get("screen", ""),
            "fingerprint": rec.txt.get("fp", ""), "authorized": None, "status": "",
        }
        found.append(entry)
    if probe:
        await defer.gatherResults([defer.ensureDeferred(_probe(reactor, e)) for e in found])
    return found


async def _probe(reactor: ICommandReactor, entry: dict[str, Any]) -> None:
    from ..agent.link_agent import AgentError, DisplayHost, DisplayTrust, LinkAgent
    from ..trust.identity import KnownDisplays

    class _Peek(KnownDisplays):
        def check(self, name: str, fingerprint: str) -> bool:  # do not remember on a probe
            for e in self.entries():
                if e.key == name and e.value != fingerprint:
                    return super().check(name, fingerprint)
            return True

    if not entry["addresses"]:
        entry["status"] = "no address"
        return
    name = f"@{entry['name']}"
    agent = LinkAgent(reactor, DisplayHost(entry["addresses"][0], entry["port"], name),
                      trust=DisplayTrust(name, entry["fingerprint"] or None,
                                         known=_Peek(KnownDisplays.default().path)))
    try:
        await agent.start_probe()
        entry["authorized"], entry["status"] = True, "ok"
    except AgentError as err:
        text = str(err)
        entry["authorized"] = False if "not authorized" in text else None
        entry["status"] = text
