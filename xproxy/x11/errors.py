"""Errors by blame, as h11 does: the peer broke the protocol, or we were asked to do wrong."""


class X11ProtocolError(Exception):
    """Bytes that are not valid X11; the connection they came on must be closed."""


class ClientProtocolError(X11ProtocolError):
    """The X client sent something impossible (bad setup, bad length, garbage)."""


class ServerProtocolError(X11ProtocolError):
    """The X server sent something impossible."""
