"""A TCP relay that makes a fast link slow: a fixed one-way delay in each direction and an
optional bandwidth cap, for tests and benchmarks (tc netem is not available here).

    python -m testing.delayrelay --listen 127.0.0.1:0 --to 127.0.0.1:6000 --delay-ms 10 \
        [--rate-kbit 2000] [--stats FILE]

prints `ready port=N` once listening. A 20 ms round trip is `--delay-ms 10`. Each chunk read
from one side is written to the other `delay` seconds later; with a rate cap, chunks also
queue behind each other as on a serial line (time on the wire = bytes * 8 / rate). Byte
counts (what crossed, per direction) go to `--stats` as JSON, rewritten as they change.
SIGUSR1 drops every connection at once (a link loss, for reconnect tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger

from xproxy.relay.twisted_internals import nodelay

log = Logger(namespace="testing.delayrelay")


@dataclass
class Counters:
    up: int = 0  # client -> target
    down: int = 0  # target -> client
    connections: int = 0
    turns: int = 0  # times the client spoke again after the target had answered: round trips


class _Pipe:
    """One direction: delays each chunk, then writes it to `out` in order."""

    def __init__(self, relay: DelayRelay, upward: bool) -> None:
        self.relay = relay
        self.upward = upward
        self.out: Any = None
        self.wire_free_at = 0.0
        self.pending: list[bytes] = []  # chunks before `out` exists

    def push(self, data: bytes) -> None:
        r = self.relay
        now = r.reactor.seconds()
        at = now
        if r.rate_bps:
            start = max(now, self.wire_free_at)
            self.wire_free_at = start + len(data) * 8 / r.rate_bps
            at = self.wire_free_at
        at += r.delay
        if self.upward:
            r.counters.up += len(data)
            if r.last_down:
                r.counters.turns += 1
        else:
            r.counters.down += len(data)
        r.last_down = not self.upward
        r.dirty()
        r.reactor.callLater(max(0.0, at - now), self._write, data)

    def _write(self, data: bytes) -> None:
        if self.out is None:
            self.pending.append(data)
        elif self.out.connected:
            self.out.write(data)

    def attach(self, transport: Any) -> None:
        self.out = transport
        for chunk in self.pending:
            transport.write(chunk)
        self.pending.clear()


class _Target(protocol.Protocol):
    def __init__(self, front: _Front) -> None:
        self.front = front

    def connectionMade(self) -> None:
        nodelay(self.transport)
        self.front.up.attach(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.front.down.push(data)

    def connectionLost(self, reason: Any = None) -> None:
        # let the last delayed bytes out before closing the other side
        self.front.relay.reactor.callLater(self.front.relay.delay + 0.001,
                                           self.front.transport.loseConnection)


class _Front(protocol.Protocol):
    def __init__(self, relay: DelayRelay) -> None:
        self.relay = relay
        self.up = _Pipe(relay, True)
        self.down = _Pipe(relay, False)
        self.target: _Target | None = None

    def connectionMade(self) -> None:
        nodelay(self.transport)
        self.relay.counters.connections += 1
        self.relay.fronts.add(self)
        self.down.attach(self.transport)
        self.target = _Target(self)
        d = TCP4ClientEndpoint(self.relay.reactor, self.relay.host, self.relay.port).connect(
            protocol.Factory.forProtocol(lambda: self.target))  # type: ignore[arg-type, return-value]
        d.addErrback(lambda _: self.transport.loseConnection())

    def dataReceived(self, data: bytes) -> None:
        self.up.push(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.relay.fronts.discard(self)
        self.relay.dirty()
        if self.target is not None and self.target.transport is not None:
            self.relay.reactor.callLater(self.relay.delay + 0.001,
                                         self.target.transport.loseConnection)

    def drop(self) -> None:
        self.transport.abortConnection()
        if self.target is not None and self.target.transport is not None:
            self.target.transport.abortConnection()


class DelayRelay:
    def __init__(self, reactor: Any, host: str, port: int, delay: float, rate_bps: float = 0,
                 stats_path: str | None = None) -> None:
        self.reactor = reactor
        self.host, self.port = host, port
        self.delay = delay
        self.rate_bps = rate_bps
        self.counters = Counters()
        self.fronts: set[_Front] = set()
        self.stats_path = stats_path
        self._write_call: Any = None
        self.last_down = False

    def factory(self) -> protocol.Factory:
        f = protocol.Factory.forProtocol(lambda: _Front(self))  # type: ignore[arg-type]
        f.noisy = False
        return f

    def drop_all(self) -> None:
        for front in list(self.fronts):
            front.drop()

    def dirty(self) -> None:
        if self.stats_path and self._write_call is None:
            self._write_call = self.reactor.callLater(0.05, self._write_stats)

    def _write_stats(self) -> None:
        self._write_call = None
        tmp = self.stats_path + ".tmp"  # type: ignore[operator]
        with open(tmp, "w") as f:
            json.dump(vars(self.counters), f)
        os.replace(tmp, self.stats_path)  # type: ignore[arg-type]



def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor

    p = argparse.ArgumentParser(prog="delayrelay", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--to", required=True)
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    p.add_argument("--rate-kbit", type=float, default=0.0, help="bandwidth cap, each direction")
    p.add_argument("--stats", default=None)
    args = p.parse_args(argv)
    lhost, lport = _hostport(args.listen)
    thost, tport = _hostport(args.to)
    relay = DelayRelay(reactor, thost, tport, args.delay_ms / 1000, args.rate_kbit * 1000,
                       args.stats)

    def listening(port: Any) -> None:
        print(f"ready port={port.getHost().port}", flush=True)

    d = TCP4ServerEndpoint(reactor, lport, interface=lhost).listen(relay.factory())
    d.addCallback(listening)
    d.addErrback(lambda f: (print(f"error: {f.getErrorMessage()}", flush=True), reactor.stop()))
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(relay.drop_all))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
