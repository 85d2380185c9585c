"""Keys and cookies on disk, adapters: `identity` (host keys, `authorized_hosts`,
`known_displays`, fingerprints) and `xauthfile` (reading and writing Xauthority files with
locking, as xauth does; the format itself is `xproxy.x11.xauth`). Nothing is imported here."""
