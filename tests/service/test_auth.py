"""API keys in the database (SQLite and PostgreSQL): made, found by hash, revoked at once."""

import pytest

from service import auth
from service.errors import NotFound, Unauthorized


def test_a_key_is_stored_only_as_its_hash_and_finds_its_tenant(db):
    row, key = auth.create_key(db, "acme")
    assert key.startswith(auth.KEY_PREFIX) and len(key) > 40
    assert row.key_hash == auth.hash_key(key) and key not in (row.key_hash, row.hint)
    who = auth.Authenticator(db, None).principal(f"Bearer {key}")
    assert who == auth.Principal(tenant="acme", key_id=row.id) and who.scope == "acme"


def test_auth_is_off_until_a_key_exists_and_on_after(db):
    a = auth.Authenticator(db, None)
    assert a.principal(None) is auth.OPEN and a.cached(None) is auth.OPEN
    auth.create_key(db, "acme")
    a.forget()
    with pytest.raises(Unauthorized, match="needs an API key"):
        a.principal(None)
    with pytest.raises(Unauthorized, match="Bearer <key>"):
        a.principal("Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthorized, match="not valid"):
        a.principal("Bearer ts-made-up")


def test_the_admin_key_needs_no_database_and_sees_everything(db):
    a = auth.Authenticator(db, auth.hash_key("the-admin-key"))
    who = a.cached("Bearer the-admin-key")
    assert who is auth.ADMIN and who.scope is None
    with pytest.raises(Unauthorized):
        a.principal(None)  # the admin key set: auth is on, keys or not


def test_revoking_stops_a_key_at_once_where_it_is_revoked(db):
    a = auth.Authenticator(db, None)
    row, key = auth.create_key(db, "acme")
    assert a.principal(f"Bearer {key}").tenant == "acme"
    assert a.cached(f"Bearer {key}").tenant == "acme"  # remembered
    auth.revoke_key(db, row.id)
    a.forget()
    with pytest.raises(Unauthorized, match="revoked"):
        a.principal(f"Bearer {key}")
    listed, _ = auth.list_keys(db)
    assert [r.revoked_at is not None for r in listed] == [True]
    with pytest.raises(NotFound):
        auth.revoke_key(db, "key_nope")


def test_revoking_the_last_key_keeps_auth_on(db):
    """A service that once had keys never opens again by itself: a revoked key still counts."""
    a = auth.Authenticator(db, None)
    row, key = auth.create_key(db, "acme")
    auth.revoke_key(db, row.id)
    a.forget()
    for header in (None, f"Bearer {key}"):
        with pytest.raises(Unauthorized):
            a.principal(header)
