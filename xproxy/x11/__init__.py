"""The X11 wire, pure: connection setup (both byte orders), request and reply framing with
BIG-REQUESTS, sequence numbers, the per-connection extension map, the Xauthority file format,
display names, per-connection tallies and the decoder. No sockets, no reactor, no clock: the
adapters in `xproxy.relay` and `xproxy.agent` feed these bytes and write what they return.
Import the modules by name (`from xproxy.x11.connection import X11Connection`)."""
