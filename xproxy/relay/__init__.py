"""The local proxy display, an adapter: `server` (`xproxy serve`: listening as a display, the
private Xauthority, the upstream endpoint), `proxy` (the Twisted protocols around
`xproxy.x11.connection.X11Connection` that only move bytes), and the relay's socket fast paths
(`twisted_internals` for Twisted's transports, every use of Twisted's private attributes
in one place, `aiotransport` for asyncio's on uvloop,
`display_socket` for the `/tmp/.X11-unix` listening socket). Nothing is imported here."""
