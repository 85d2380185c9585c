"""Watching the proxied connections: `trace` (the tracer's filters and formats), `metrics`
(Prometheus metrics counted from the framers' tallies) and `instruments` (what watches each
client when tracing or metrics are on). Nothing is imported here."""
