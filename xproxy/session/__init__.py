"""Named movable sessions around the move engine (xproxy/move/): `xproxy run --session`,
`move`, `detach`, `attach` and `sessions`.

A session is one process (`agent`) that owns a movable display, the upstream it shows on (a
local display, a link agent it holds, or a headless Xvfb of its own while detached), and a
control socket found by name through an index in the runtime directory (`index`). `core`
holds what is decided without I/O (requests, the lifetime policy, the listing); `client` is
what the commands run, with the standard library only; `headless` starts the Xvfb a detached
session lives on. Nothing is imported here: `xproxy run` must not load Twisted.
"""
