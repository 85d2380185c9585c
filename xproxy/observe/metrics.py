"""Per-connection traffic metrics, the `--stats` summaries, and a Prometheus endpoint.

Each connection's framers count as they frame (x11/tally.py: no message is copied or
decoded for metrics); `ConnectionMetrics` reads those counts when a summary or a scrape asks.
A round trip is a request that got a reply; its latency is the time from the proxy reading
the request's header to it reading the first reply's, in the clock the metrics were given
(the reactor's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..x11.tally import Tally
from ..x11.traffic import LATENCY_BUCKETS, ConnectionMetrics

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IListeningPort, IReactorCore

__all__ = ["LATENCY_BUCKETS", "ConnectionMetrics", "Metrics", "listen_metrics"]


class Metrics:
    """All connections of one proxy: the live ones by client number, and the finished ones
    summed. `clock` gives the times reply latencies are taken in."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.active: dict[int, Tally] = {}
        self.finished = ConnectionMetrics()
        self.clients = 0

    def client(self, number: int) -> Tally:
        """The tally for a new client's connection."""
        t = self.active[number] = Tally(self.clock)
        self.clients += 1
        return t

    def client_done(self, number: int) -> ConnectionMetrics | None:
        t = self.active.pop(number, None)
        if t is None:
            return None
        m = ConnectionMetrics.of(number, t)
        self.finished.add(m)
        return m

    def live(self) -> dict[int, ConnectionMetrics]:
        """What each connected client did so far, by client number."""
        return {number: ConnectionMetrics.of(number, t) for number, t in self.active.items()}

    def totals(self, live: dict[int, ConnectionMetrics] | None = None) -> ConnectionMetrics:
        """All clients' together (`live`: what `live()` returned, when the caller has it)."""
        total = ConnectionMetrics()
        total.add(self.finished)
        for c in (self.live() if live is None else live).values():
            total.add(c)
        return total

    def registry(self) -> CollectorRegistry:
        """A private registry (not prometheus_client's global one) exposing these metrics."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        m = self.metrics
        live = m.live()
        t = m.totals(live)
        yield GaugeMetricFamily("xproxy_clients_connected", "X clients connected now",
                                value=len(m.active))
        yield CounterMetricFamily("xproxy_clients", "X clients accepted", value=m.clients)
        b = CounterMetricFamily("xproxy_bytes", "Bytes relayed", labels=["direction"])
        b.add_metric(["from_client"], t.bytes_from_client)
        b.add_metric(["from_server"], t.bytes_from_server)
        yield b
        k = CounterMetricFamily("xproxy_messages", "X11 messages relayed", labels=["kind"])
        for kind in ("setup", "setup-reply", "request", "reply", "event", "error"):
            k.add_metric([kind], t.kinds[kind])
        yield k
        r = CounterMetricFamily("xproxy_requests", "Requests by name", labels=["name"])
        for name, count in sorted(t.requests.items()):
            r.add_metric([name], count)
        yield r
        yield CounterMetricFamily("xproxy_round_trips", "Requests that got a reply",
                                  value=t.round_trips)
        buckets = []
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, t.latency_counts):
            running += count
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", running + t.latency_counts[-1]))
        yield HistogramMetricFamily("xproxy_reply_latency_seconds",
                                    "From a request to its first reply, seen by the proxy",
                                    buckets=buckets, sum_value=t.latency_sum)
        cb = CounterMetricFamily("xproxy_client_bytes", "Bytes relayed per connected client",
                                 labels=["client", "direction"])
        cr = CounterMetricFamily("xproxy_client_round_trips",
                                 "Round trips per connected client", labels=["client"])
        for number, c in sorted(live.items()):
            cb.add_metric([str(number), "from_client"], c.bytes_from_client)
            cb.add_metric([str(number), "from_server"], c.bytes_from_server)
            cr.add_metric([str(number)], c.round_trips)
        yield cb
        yield cr


def metrics_resource(registry: CollectorRegistry) -> Any:
    """A twisted.web resource rendering the registry on the reactor thread.
    prometheus_client.twisted.MetricsResource renders in a thread pool, which would read
    these counters while the reactor changes them."""
    from twisted.web.resource import Resource

    class MetricsPage(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
            return generate_latest(registry)

    return MetricsPage()


def listen_metrics(reactor: IReactorCore, endpoint: str,
                   metrics: Metrics) -> Deferred[IListeningPort]:
    """Serve `metrics` in Prometheus text format at every path of `endpoint` (a Twisted
    endpoint string such as tcp:9100:interface=127.0.0.1, which says what the reactor must
    provide). Returns the listen Deferred."""
    from twisted.internet.endpoints import serverFromString
    from twisted.web.server import Site

    site = Site(metrics_resource(metrics.registry()))
    site.noisy = False
    return serverFromString(reactor, endpoint).listen(site)

