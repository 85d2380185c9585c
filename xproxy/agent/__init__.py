"""The app host's link agent, an adapter: one process per display host (`link_agent.LinkAgent`:
TLS, the display host's key, reconnection, round-trip suppression) and the control socket that
`xproxy run` asks for a display (`runservice.RunService`). Nothing is imported here, so
`xproxy run` can reach a running agent without loading Twisted."""
