"""Users, passwords and access tokens of the local server.

Passwords are stored as scrypt hashes. Tokens are 256 random bits shown to the client once;
the database keeps only their SHA-256, so a copy of the database does not hand out sessions.
Valid tokens are cached in memory for :data:`TOKEN_RECHECK` seconds (a dict lookup per
request); revocation in this process drops them at once, and a change made by another
process (``server add-user`` resetting a password revokes that user's sign-in tokens) is
seen within those seconds.

Guessing passwords is slowed by :class:`SignInThrottle`; a sign-in as an unknown user costs
the same scrypt work as one as a known user, so timing does not tell which names exist.
"""

from __future__ import annotations

import functools
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
    digest = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, dklen=32,
                            **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def check_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches ``stored`` (constant-time compare). With no stored
    hash (an unknown user) the same scrypt work is done against a dummy, and False returned."""
    known = bool(stored and stored.startswith("scrypt$"))
    _, n, r, p, salt, digest = (stored if known else _dummy_hash()).split("$")
    got = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=bytes.fromhex(salt),
                         dklen=32, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got.hex(), digest) and known


def check_username(name: str) -> str:
    """Return ``name`` if it is a valid user name, else raise ``ValueError`` saying why."""
    if not _USER_RE.match(name or ""):
        raise ValueError(f"bad user name {name!r}: letters, digits, '_', '.', '@', '-' "
                         "(max 64), starting with a letter or digit")
    return name


def add_user(data_dir: str | Path, name: str, password: str) -> bool:
    """Create (or reset the password of) user ``name`` in the server's database; True when
    the user is new.

    Resetting a password revokes the user's sign-in tokens (a running server stops
    accepting them within :data:`TOKEN_RECHECK` seconds); tokens of running jobs stay. Safe
    while the server runs (SQLite WAL). Raises ``ValueError`` for a bad name or an empty
    password.
    """
    check_username(name)
    if not password:
        raise ValueError("the password must not be empty")
    store = Store(data_dir)
    try:
        existed = store.password_hash(name) is not None
        store.add_user(name, hash_password(password))
    finally:
        store.close()
    return not existed


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


TOKEN_RECHECK = 2.0
"""Seconds a token found valid is trusted from memory before the database is asked again."""


class Tokens:
    """Issue, look up and revoke tokens, with an in-memory cache in front of the store."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, tuple[float, TokenInfo]] = {}

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
        now = time.time()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            info = hit[1]
        else:
            row = self.store.token(h)
            if row is None:
                self._cache.pop(h, None)
                return None
            info = TokenInfo(hash=h, **row)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[h] = (now + TOKEN_RECHECK, info)
        if info.expires < now:
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


class SignInThrottle:
    """Slows password guessing down: after ``attempts`` failed sign-ins for one user from one
    address (or ``4 * attempts`` for one user from anywhere, or from one address for any
    users), each further attempt must wait twice as long as the one before — 1 s, 2 s, 4 s
    ... up to ``backoff_max`` seconds — and is refused with a 429 before any password is
    checked. A success resets that user's count from that address. Failures are forgotten
    ``backoff_max`` seconds after the last one.

    Per user and address first, so a user locked out by someone else's guessing elsewhere
    still signs in from their own address until the wider (4x) limits are reached.
    """

    def __init__(self, attempts: int = 5, backoff_max: float = 900.0):
        self.attempts = attempts
        self.backoff_max = backoff_max
        self._fails: dict[tuple[str, ...], tuple[int, float]] = {}

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("pair", user, address), self.attempts), (("user", user), 4 * self.attempts),
                (("address", address), 4 * self.attempts)]

    def wait(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds before an attempt for ``user`` from ``address`` is accepted (0: now)."""
        now = time.time() if now is None else now
        longest = 0.0
        for key, limit in self._keys(user, address):
            count, last = self._fails.get(key, (0, 0.0))
            if count >= limit and now - last < self.backoff_max:
                delay = min(2.0 ** (count - limit), self.backoff_max)
                longest = max(longest, last + delay - now)
        return longest

    def failed(self, user: str, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self._fails) > 100_000:
            self._fails = {k: v for k, v in self._fails.items()
                           if now - v[1] < self.backoff_max}
        for key, _ in self._keys(user, address):
            count, last = self._fails.get(key, (0, 0.0))
            if now - last >= self.backoff_max:
                count = 0
            self._fails[key] = (count + 1, now)

    def succeeded(self, user: str, address: str) -> None:
        self._fails.pop(("pair", user, address), None)


SIGN_IN_LINK_LIFETIME = 120.0
"""Seconds a one-time sign-in link works (``everest-jupyter ui`` opens it at once)."""


class SignInLinks:
    """One-time codes that sign a browser in as a user (``everest-jupyter ui``).

    A code is 256 random bits, good once and for :data:`SIGN_IN_LINK_LIFETIME` seconds;
    only its SHA-256 is kept, in memory (a restart forgets outstanding codes, which is
    harmless for links opened at once). The code travels in the link's fragment, which
    browsers never send, so it is in no request line or access log.
    """

    def __init__(self, lifetime: float = SIGN_IN_LINK_LIFETIME):
        self.lifetime = lifetime
        self._codes: dict[str, tuple[str, float]] = {}

    def issue(self, user: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        self._codes = {h: v for h, v in self._codes.items() if v[1] > now}
        if len(self._codes) > 10_000:
            raise ValueError("too many sign-in links outstanding")
        code = secrets.token_urlsafe(32)
        self._codes[token_hash(code)] = (user, now + self.lifetime)
        return code

    def redeem(self, code: str, now: float | None = None) -> str | None:
        """The user ``code`` signs in, once; None when unknown, used or expired."""
        now = time.time() if now is None else now
        user, expires = self._codes.pop(token_hash(code), (None, 0.0))
        return user if expires > now else None

