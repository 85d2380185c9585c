"""Round-trip suppression, pure: near the application, requests whose replies are known are
answered from a cache of the display's answers while every sequence number the client and the
server see stays exact (`core.Suppressor`, `core.DisplayCache`). No sockets, no reactor, no
clock; the link agent (`xproxy.agent`) is its adapter."""
