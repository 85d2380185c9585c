"""What watches each client when tracing or metrics are on: the tracer's observer, which
decodes each message once it has gone on, and the metrics' tally, which counts from headers
as the framers read them (x11/tally.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from ..x11.connection import Watch
from ..x11.decode.decoder import Decoder, Want
from .metrics import Metrics
from .trace import NameFilter, Tracer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["ClientObserver", "Instruments", "observers"]


class ClientObserver:
    """The tracer's observer of one client."""

    def __init__(self, number: int, clock: Callable[[], float], tracer: Tracer) -> None:
        self.number = number
        self.clock = clock
        self.tracer = tracer
        self.decoder = Decoder()
        self.queue: list[tuple[str, int, bytes, float]] = []

    @property
    def fields(self) -> Want:
        """What the decoder is told about fields: the tracer's wish (False once its file
        failed)."""
        return self.tracer.fields

    def __call__(self, direction: str, seq: int, msg: bytes) -> None:
        """A message, framed: noted with the time, decoded and traced in `flush`."""
        self.queue.append((direction, seq, msg, self.clock()))

    def flush(self) -> None:
        queue = self.queue
        if not queue:
            return
        self.queue = []
        decode = self.decoder.decode
        emit = self.tracer.emit
        atoms = self.decoder.atoms
        fields = self.fields
        for direction, seq, msg, now in queue:
            emit(self.number, decode(direction, seq, msg, now, fields), now, atoms)


def observers(clock: Callable[[], float], tracer: Tracer | None = None,
              metrics: Metrics | None = None) -> Callable[[int], Watch] | None:
    """The `observers` argument of ProxyFactory: None when nothing watches, so the relay
    only frames."""
    if tracer is None and metrics is None:
        return None

    def make(number: int) -> Watch:
        return Watch(ClientObserver(number, clock, tracer) if tracer is not None else None,
                     metrics.client(number) if metrics is not None else None)

    return make


class Instruments:
    """The tracer, metrics and `--stats` of one proxy process, from command-line options."""

    def __init__(self, clock: Callable[[], float], trace: TextIO | None = None,
                 trace_format: str = "text", only: Iterable[str] = (),
                 skip: Iterable[str] = (), stats: bool = False, metrics: bool = False,
                 report: TextIO | None = None, close_trace: bool = False) -> None:
        self.tracer = (Tracer(trace, trace_format, NameFilter(only, skip))
                       if trace is not None else None)
        self.metrics = Metrics(clock) if (stats or metrics) else None
        self.stats = stats
        self.report = report or sys.stderr
        self._close_trace = close_trace
        self.observers = observers(clock, self.tracer, self.metrics)

    def client_done(self, client: Any) -> None:
        """ProxyFactory's on_client_done: a client went."""
        if self.metrics is not None:
            m = self.metrics.client_done(client.number)
            if self.stats and m is not None:
                print(f"xproxy: client {client.number}: {m.summary()}", file=self.report,
                      flush=True)
        if self.tracer is not None:
            self.tracer.flush()

    def flush(self) -> None:
        if self.tracer is not None:
            self.tracer.flush()

    def start_flushing(self, reactor: IReactorTime, every: float = 1.0) -> None:
        """Flush the trace file every `every` seconds, so a long session can be followed."""
        from twisted.internet import task

        if self.tracer is not None:
            self._flusher = task.LoopingCall(self.flush)
            self._flusher.clock = reactor
            self._flusher.start(every, now=False)

    def stop(self) -> None:
        flusher = getattr(self, "_flusher", None)
        if flusher is not None and flusher.running:
            flusher.stop()
        if self.stats and self.metrics is not None:
            print(f"xproxy: totals over {self.metrics.clients} clients: "
                  f"{self.metrics.totals().summary(top=10)}", file=self.report, flush=True)
        if self.tracer is not None:
            self.tracer.flush()
            if self._close_trace:
                self.tracer.close()
