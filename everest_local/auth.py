"""Users, passwords and access tokens of the local server.

Passwords are stored as scrypt hashes. Tokens are 256 random bits shown to the client once;
the database keeps only their SHA-256, so a copy of the database does not hand out sessions.
Valid tokens are cached in memory (a dict lookup per request); revocation drops them from
the cache at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from everest_local.store import Store

DEFAULT_LIFETIME = 7 * 24 * 3600  # Everest's default: one week
MAX_LIFETIME = 5 * 365 * 24 * 3600
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` with a fresh salt, as one string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored`` (constant-time compare)."""
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32,
                         n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got.hex(), digest)


def check_username(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise ``ValueError`` saying why."""
    if not _USER_RE.match(name or ""):
        raise ValueError(f"bad user name {name!r}: letters, digits, '_', '.', '@', '-' "
                         "(max 64), starting with a letter or digit")
    return name


def add_user(data_dir: str | Path, name: str, password: str) -> None:
    """Create (or reset the password of) user ``name`` in the server's database.

    Safe while the server runs (SQLite WAL). Raises ``ValueError`` for a bad name or an
    empty password.
    """
    check_username(name)
    if not password:
        raise ValueError("the password must not be empty")
    store = Store(data_dir)
    try:
        store.add_user(name, hash_password(password))
    finally:
        store.close()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """Who a token belongs to. ``job_id`` is set for a job-scoped task token."""

    hash: str
    user: str
    label: str
    created: float
    expires: float
    job_id: str | None = None


class Tokens:
    """Issue, look up and revoke tokens, with an in-memory cache in front of the store."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, TokenInfo] = {}

    def issue(self, user: str, label: str, lifetime: float = DEFAULT_LIFETIME,
              job_id: str | None = None) -> str:
        """A new token for ``user``; returns the token itself (stored only hashed)."""
        token = secrets.token_urlsafe(32)
        expires = time.time() + lifetime
        self.store.add_token(token_hash(token), user, label, expires, job_id)
        return token

    def lookup(self, token: str | None) -> TokenInfo | None:
        """The token's info, or None when it is unknown, revoked or expired."""
        if not token:
            return None
        h = token_hash(token)
        info = self._cache.get(h)
        if info is None:
            row = self.store.token(h)
            if row is None:
                return None
            info = TokenInfo(hash=h, **row)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[h] = info
        if info.expires < time.time():
            self._cache.pop(h, None)
            return None
        return info

    def revoke(self, info: TokenInfo) -> None:
        self._cache.pop(info.hash, None)
        self.store.delete_token(info.hash)

    def revoke_job(self, job_id: str) -> None:
        """Revoke every task token of a job (called when the job ends)."""
        for h in self.store.delete_job_tokens(job_id):
            self._cache.pop(h, None)
