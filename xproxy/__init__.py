"""xproxy: the X11 proxy, its tracer, and the remote launcher over a TLS link. Each folder is one
part: `x11` (the X11 wire) and `suppress` (round-trip suppression) are pure; `link` is the link
between hosts (a pure protocol and its Twisted adapter); `relay` (`xproxy serve`), `export`,
`agent`, `run`, `trust`, `observe` and `cli` are adapters. docs/architecture.md has the tree."""
