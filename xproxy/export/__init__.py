"""`xproxy export`, an adapter: the display host's end of the link (`server.ExportServer`),
which relays each X connection an app host carries to the local display and advertises the
display through discoveryd. Nothing is imported here."""
