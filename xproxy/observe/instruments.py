"""What watches each client when tracing or metrics are on: the tracer's observer, which
decodes each message once it has gone on (for the trace lines, the wait analysis, or both),
and the metrics' tally, which counts from headers as the framers read them (x11/tally.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from ..x11.connection import Watch
from ..x11.decode.decoder import Decoder, Want
from .metrics import Metrics
from .trace import NameFilter, Tracer
from .waits import NEEDED_FIELDS, WaitAnalysis

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["ClientObserver", "Instruments", "observers"]


class ClientObserver:
    """The tracer's observer of one client: decodes for the trace lines (`tracer`) and for
    the wait analysis (`waits`), either or both."""

    def __init__(self, number: int, clock: Callable[[], float], tracer: Tracer | None,
                 waits: WaitAnalysis | None = None) -> None:
        self.number = number
        self.clock = clock
        self.tracer = tracer
        self.waits = waits
        self.decoder = Decoder()
        self.queue: list[tuple[str, int, bytes, float]] = []

    @property
    def fields(self) -> Want:
        """What the decoder is told about fields: the tracer's wish (False once its file
        failed), and the few messages the wait analysis reads."""
        wish: Want = self.tracer.fields if self.tracer is not None else False
        if self.waits is None or wish is True:
            return wish
        if wish is False:
            return NEEDED_FIELDS.__contains__
        return lambda name: name in NEEDED_FIELDS or wish(name)  # type: ignore[operator]

    def __call__(self, direction: str, seq: int, msg: bytes) -> None:
        """A message, framed: noted with the time, decoded and traced in `flush`."""
        self.queue.append((direction, seq, msg, self.clock()))

    def flush(self) -> None:
        queue = self.queue
        if not queue:
            return
        self.queue = []
        decode = self.decoder.decode
        emit = self.tracer.emit if self.tracer is not None else None
        waits = self.waits
        pending = self.decoder.pending
        atoms = self.decoder.atoms
        fields = self.fields
        number = self.number
        for direction, seq, msg, now in queue:
            awaited = direction == "error" and seq in pending
            d = decode(direction, seq, msg, now, fields)
            if emit is not None:
                emit(number, d, now, atoms)
            if waits is not None:
                waits.feed(number, d, now, awaited)


def observers(clock: Callable[[], float], tracer: Tracer | None = None,
              metrics: Metrics | None = None,
              waits: WaitAnalysis | None = None) -> Callable[[int], Watch] | None:
    """The `observers` argument of ProxyFactory: None when nothing watches, so the relay
    only frames."""
    if tracer is None and metrics is None and waits is None:
        return None

    def make(number: int) -> Watch:
        watching = tracer is not None or waits is not None
        return Watch(ClientObserver(number, clock, tracer, waits) if watching else None,
                     metrics.client(number) if metrics is not None else None)

    return make


class Instruments:
    """The tracer, metrics, wait analysis and `--stats` of one proxy process, from
    command-line options. `trace_format` "perfetto" writes the waits to `trace` as
    Chrome/Perfetto trace JSON when stopped, instead of trace lines; `waits` analyses them
    beside the trace lines (for `--timeline`); `link`: the clients go through a link."""

    def __init__(self, clock: Callable[[], float], trace: TextIO | None = None,
                 trace_format: str = "text", only: Iterable[str] = (),
                 skip: Iterable[str] = (), stats: bool = False, metrics: bool = False,
                 report: TextIO | None = None, close_trace: bool = False,
                 waits: bool = False, link: bool = False) -> None:
        perfetto = trace_format == "perfetto"
        self.tracer = (Tracer(trace, trace_format, NameFilter(only, skip))
                       if trace is not None and not perfetto else None)
        self.perfetto_out = trace if perfetto else None
        self.waits = WaitAnalysis(link=link) if (waits or perfetto) else None
        self.metrics = Metrics(clock) if (stats or metrics) else None
        self.stats = stats
        self.report = report or sys.stderr
        self._close_trace = close_trace
        self.observers = observers(clock, self.tracer, self.metrics, self.waits)

    def answered(self, client: int, seq: int, behind: int) -> None:
        """The link agent answered request `seq` of `client` itself, held until request
        `behind` had finished if not 0 (for the wait analysis; agent/upstream.py's
        `RunCounts.marks`)."""
        if self.waits is not None:
            self.waits.mark(client, seq, behind)

    def client_done(self, client: Any) -> None:
        """ProxyFactory's on_client_done: a client went."""
        if self.metrics is not None:
            m = self.metrics.client_done(client.number)
            if self.stats and m is not None:
                print(f"xproxy: client {client.number}: {m.summary()}", file=self.report,
                      flush=True)
        if self.tracer is not None:
            self.tracer.flush()
        if self.waits is not None:
            self.waits.client_done(client.number)

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
        out = self.perfetto_out
        if out is not None and self.waits is not None:
            self.perfetto_out = None
            try:
                json.dump(self.waits.to_perfetto(), out)
                out.write("\n")
                out.flush()
                if self._close_trace:
                    out.close()
            except (OSError, ValueError) as err:
                print(f"xproxy: cannot write the waits: {err}", file=self.report, flush=True)
