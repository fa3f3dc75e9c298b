"""API keys and tenants.

A key belongs to one tenant; every file, job and fine-tuned model belongs to the tenant whose
key made it, and another tenant's key gets a 404 for it (not a 403: no existence leaks).
Base models, and models made from the command line, belong to no tenant: everyone sees them.
The admin key (the setting TUNESERVE_ADMIN_KEY) creates, lists and revokes keys and sees
everything.

Keys are random (32 bytes, URL-safe base64, after the prefix `ts-`); the database keeps only
their SHA-256, which is enough for a secret with that much entropy (a slow password hash
protects guessable secrets). A key is shown once, when it is created. Nothing here logs a
key: log lines name a key by its id.

Authentication is on when the admin key is set or any key exists; otherwise the service is
open (`make run` on loopback) and says so when it starts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from service.db import ApiKey, Database, now
from service.errors import NotFound, Unauthorized
from service.paging import page

KEY_PREFIX = "ts-"
# how long a replica trusts what it read: a key it has seen, or "auth is off". A key revoked
# through this replica stops at once (the replica forgets it); through another, within this.
CACHE_S = 2.0


@dataclass(frozen=True)
class Principal:
    """Who is asking. `tenant` None with `admin` False: the service runs open."""

    tenant: str | None
    admin: bool = False
    key_id: str | None = None

    @property
    def scope(self) -> str | None:
        """The tenant whose objects this caller sees; None: all of them."""
        return None if self.admin else self.tenant


OPEN = Principal(tenant=None)
ADMIN = Principal(tenant=None, admin=True, key_id="admin")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, tenant: str) -> tuple[ApiKey, str]:
    """A new key for `tenant`: the row and the key itself (never stored, shown once)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id="key_" + secrets.token_hex(12),
        tenant=tenant,
        key_hash=hash_key(key),
        hint=key[: len(KEY_PREFIX) + 4],
        created_at=now(),
    )
    with db.session() as s:
        s.add(row)
    return row, key


def list_keys(db: Database, *, after: str | None = None, limit: int = 20):
    with db.session() as s:
        return page(s, select(ApiKey), ApiKey, limit, after)


def revoke_key(db: Database, key_id: str) -> ApiKey:
    with db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.id == key_id))
        if row is None:
            raise NotFound(f"no key {key_id!r}", param="key_id")
        if row.revoked_at is None:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=now()))
            row.revoked_at = now()
        s.expunge(row)
        return row


class Authenticator:
    """Turns an `Authorization` header into a Principal, reading the database at most every
    CACHE_S seconds per key. Thread-safe; one per ingress replica.

    `cached()` answers from memory alone (None when it would need the database), so that a
    request for a key seen in the last CACHE_S seconds costs a dictionary lookup."""

    def __init__(self, db: Database, admin_key_sha256: str | None):
        self.db = db
        self._admin_hash = admin_key_sha256
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, Principal | None]] = {}
        self._any_keys: tuple[float, bool] | None = None

    def forget(self) -> None:
        """Drop what this replica remembers (after a key is created or revoked here)."""
        with self._lock:
            self._seen.clear()
            self._any_keys = None

    @staticmethod
    def _fresh(read_at: float) -> bool:
        return time.monotonic() - read_at < CACHE_S

    def cached(self, authorization: str | None) -> Principal | None:
        if not self._admin_hash:  # on only while a key exists: is one known to exist?
            with self._lock:
                any_keys = self._any_keys
            if any_keys is None or not self._fresh(any_keys[0]):
                return None
            if not any_keys[1]:
                return OPEN
        digest = self._digest(authorization)
        if self._admin_hash and hmac.compare_digest(digest, self._admin_hash):
            return ADMIN
        with self._lock:
            seen = self._seen.get(digest)
        if seen is None or not self._fresh(seen[0]):
            return None
        if seen[1] is None:
            raise Unauthorized("this API key is not valid (unknown or revoked)")
        return seen[1]

    def principal(self, authorization: str | None) -> Principal:
        """Who the header says the caller is; Unauthorized when auth is on and it says no one.
        May read the database: call it from a thread."""
        answer = self.cached(authorization)
        if answer is not None:
            return answer
        if not self._admin_hash:
            with self.db.session() as s:
                found = s.scalar(select(ApiKey.id).limit(1)) is not None
            with self._lock:
                self._any_keys = (time.monotonic(), found)
            if not found:
                return OPEN
        digest = self._digest(authorization)
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            who = (
                Principal(tenant=row.tenant, key_id=row.id)
                if row is not None and row.revoked_at is None
                else None
            )
        with self._lock:
            if len(self._seen) > 10_000:  # a flood of made-up keys must not grow memory
                self._seen.clear()
            self._seen[digest] = (time.monotonic(), who)
        if who is None:
            raise Unauthorized("this API key is not valid (unknown or revoked)")
        return who

    @staticmethod
    def _digest(authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized("this service needs an API key: send `Authorization: Bearer <key>`")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("the Authorization header must be `Bearer <key>`")
        return hash_key(key)
