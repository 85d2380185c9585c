"""The link between an app host and a display host: many X connections multiplexed over one
TLS connection. `protocol` is the pure core (framing, channels, flow control, replay on
resumption, the session table: bytes in, events out, no sockets or clock); `transport` is its
Twisted adapter (the session, the connection and a transport per channel) and `tls` the
TLS 1.3 context factories. Nothing is imported here, so the pure core loads without Twisted."""
