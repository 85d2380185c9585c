"""Host keys, the authorized list and remembered display keys."""

from __future__ import annotations

import os

import pytest

from xproxy.trust.identity import (
    AuthorizedHosts,
    Identity,
    IdentityError,
    KeyChanged,
    KnownDisplays,
    valid_fingerprint,
)


def test_identity_is_created_once_and_kept(tmp_path):
    first = Identity.load_or_create(str(tmp_path))
    again = Identity.load_or_create(str(tmp_path))
    assert first.fingerprint == again.fingerprint and valid_fingerprint(first.fingerprint)
    assert oct(os.stat(first.key_path).st_mode & 0o777) == "0o600"
    other = Identity.load_or_create(str(tmp_path / "other"))
    assert other.fingerprint != first.fingerprint


def test_authorize_and_revoke(tmp_path):
    fp = Identity.load_or_create(str(tmp_path)).fingerprint
    hosts = AuthorizedHosts(str(tmp_path / "authorized_hosts"))
    assert not hosts.is_authorized(fp)
    assert hosts.authorize(fp, "laptop") is True
    assert hosts.authorize(fp, "laptop") is False
    assert hosts.is_authorized(fp)
    assert hosts.revoke("laptop") == 1
    assert not hosts.is_authorized(fp)
    with pytest.raises(IdentityError):
        hosts.authorize("SHA256:short")


def test_authorized_list_is_reread_when_it_changes(tmp_path):
    fp = Identity.load_or_create(str(tmp_path)).fingerprint
    path = str(tmp_path / "authorized_hosts")
    reader = AuthorizedHosts(path)
    assert not reader.is_authorized(fp)
    AuthorizedHosts(path).authorize(fp)  # another process, e.g. `xproxy authorize`
    assert reader.is_authorized(fp)


def test_known_displays_trust_on_first_use_then_refuse_a_change(tmp_path):
    known = KnownDisplays(str(tmp_path / "known_displays"))
    a = Identity.load_or_create(str(tmp_path / "a")).fingerprint
    b = Identity.load_or_create(str(tmp_path / "b")).fingerprint
    assert known.check("@office", a) is False
    assert known.check("@office", a) is True
    with pytest.raises(KeyChanged, match="remove line 1"):
        known.check("@office", b)
    assert known.check("@lab", b) is False
