"""Host identities as ssh has them: a key pair per host, fingerprints, an authorized list on the
display host and remembered display keys (trust on first use) on the app host.

Files live under `$XDG_CONFIG_HOME/xtransparency/` (else `~/.config/xtransparency/`):
- `identity.key`, `identity.crt`: this host's EC P-256 key and a self-signed certificate for it,
  created on first use (mode 0600);
- `authorized_hosts`: one app host per line, `SHA256:... label`;
- `known_displays`: one display per line, `name-or-address SHA256:...`.

A fingerprint is `SHA256:` and the unpadded base64 of the SHA-256 of the DER public key
(SubjectPublicKeyInfo), the form `ssh-keygen -l` prints.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class IdentityError(Exception):
    """A key, certificate or trust file problem, with what to do about it."""


def config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "xtransparency")


def fingerprint_of_public_key(public_key) -> str:  # type: ignore[no-untyped-def]
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def fingerprint_of_certificate(cert: x509.Certificate) -> str:
    return fingerprint_of_public_key(cert.public_key())


def valid_fingerprint(text: str) -> bool:
    if not text.startswith("SHA256:"):
        return False
    body = text[7:]
    try:
        return len(base64.b64decode(body + "=" * (-len(body) % 4), validate=True)) == 32
    except ValueError:
        return False


@dataclass
class Identity:
    key_path: str
    cert_path: str
    fingerprint: str

    @classmethod
    def load_or_create(cls, directory: str | None = None) -> Identity:
        directory = directory or config_dir()
        key_path = os.path.join(directory, "identity.key")
        cert_path = os.path.join(directory, "identity.crt")
        if not os.path.exists(key_path) or not os.path.exists(cert_path):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _create(key_path, cert_path)
        try:
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as err:
            raise IdentityError(f"cannot read {cert_path}: {err}") from err
        return cls(key_path, cert_path, fingerprint_of_certificate(cert))


def _create(key_path: str, cert_path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TrustEntry:
    key: str  # a fingerprint (authorized_hosts) or a display's name/address (known_displays)
    value: str  # a label (authorized_hosts) or a fingerprint (known_displays)


class TrustFile:
    """A small line-based file: `first rest...`, comments with #; rewritten atomically."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[TrustEntry] = []

    def entries(self) -> list[TrustEntry]:
        """The entries, reread when the file changed since the last read."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._stamp, self._entries = None, []
            return []
        if stamp != self._stamp:
            entries = []
            with open(self.path) as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    first, _, rest = line.partition(" ")
                    entries.append(TrustEntry(first, rest.strip()))
            self._stamp, self._entries = stamp, entries
        return list(self._entries)

    def write(self, entries: list[TrustEntry]) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        text = "".join(f"{e.key} {e.value}".rstrip() + "\n" for e in entries)
        _write_private(self.path, text.encode())
        self._stamp = None


class AuthorizedHosts(TrustFile):
    """App hosts allowed to use this host's exported displays."""

    @classmethod
    def default(cls) -> AuthorizedHosts:
        return cls(os.path.join(config_dir(), "authorized_hosts"))

    def is_authorized(self, fingerprint: str) -> bool:
        return any(e.key == fingerprint for e in self.entries())

    def authorize(self, fingerprint: str, label: str = "") -> bool:
        if not valid_fingerprint(fingerprint):
            raise IdentityError(f"not a fingerprint: {fingerprint!r} (expected SHA256:...)")
        entries = [e for e in self.entries() if e.key != fingerprint]
        new = not self.is_authorized(fingerprint)
        self.write([*entries, TrustEntry(fingerprint, label)])
        return new

    def revoke(self, which: str) -> int:
        entries = self.entries()
        kept = [e for e in entries if which not in (e.key, e.value)]
        self.write(kept)
        return len(entries) - len(kept)


class KeyChanged(IdentityError):
    pass


class KnownDisplays(TrustFile):
    """Display hosts' keys as first seen (trust on first use), like ssh's known_hosts."""

    @classmethod
    def default(cls) -> KnownDisplays:
        return cls(os.path.join(config_dir(), "known_displays"))

    def check(self, name: str, fingerprint: str) -> bool:
        """True when `name` is known with this key, False when it is new (and now
        remembered); raises KeyChanged when it was known with another key."""
        for number, entry in enumerate(self.entries(), start=1):
            if entry.key == name:
                if entry.value == fingerprint:
                    return True
                raise KeyChanged(
                    f"the key of display {name} has changed: it was {entry.value}, now it is "
                    f"{fingerprint}. Someone may be impersonating it, or its host got a new key. "
                    f"If you trust the change, remove line {number} of {self.path}."
                )
        self.write([*self.entries(), TrustEntry(name, fingerprint)])
        return False
