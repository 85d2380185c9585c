"""`xproxy run`: `client` is the standard-library-only client that asks a running link agent for
a display (no Twisted, no TLS handshake on the common path); `launcher` starts a program on a
display reached by discovery, a link agent or a local `serve`; `child` runs the program;
`paths` holds what both sides share (socket paths, `LinkTarget`, `LinkMode`, `RunError`).
Nothing is imported here: importing the package must not load Twisted."""
