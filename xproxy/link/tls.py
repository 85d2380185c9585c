"""TLS for the link: mutual authentication by key fingerprint, not by certificate authority.

Both ends present their self-signed identity certificate. OpenSSL is told to accept any
certificate during the handshake; the link protocol then compares the peer's key fingerprint
with what it trusts (the authorized list on the display host, the advertised and remembered
key on the app host), as ssh does with host and user keys.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from zope.interface import implementer

from ..trust.identity import Identity


def _context(identity: Identity) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_file(identity.cert_path)
    ctx.use_privatekey_file(identity.key_path)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class ServerContextFactory:
    """For SSL4ServerEndpoint: requires a client certificate."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._ctx = _context(identity)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._ctx, None)


@implementer(IOpenSSLClientConnectionCreator)
class ClientContextFactory:
    """For SSL4ClientEndpoint: presents our certificate."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._ctx = _context(identity)

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._ctx, None)
        connection.set_connect_state()
        return connection
