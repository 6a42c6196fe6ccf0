"""Users, passwords and access tokens of the local server.

Passwords are stored as scrypt hashes. Tokens are 256 random bits shown to the client once;
the database keeps only their SHA-256, so a copy of the database does not hand out sessions.
Valid tokens are cached in memory for :data:`TOKEN_RECHECK` seconds (a dict lookup per
request); revocation in this process drops them at once, and a change made by another
process (``server add-user`` resetting a password revokes that user's sign-in tokens) is
seen within those seconds.

Guessing passwords is slowed by :class:`SignInThrottle` (per address first; an account is
locked only by many addresses, and never for a client holding the user's known-device
cookie, :class:`DeviceCookies`); a sign-in as an unknown user costs
the same scrypt work as one as a known user, so timing does not tell which names exist.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

from everest_app.throttle import SignInThrottle as SignInThrottle  # noqa: F401 - re-exported
from everest_app.throttle import address_key as address_key  # noqa: F401
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


DEVICE_COOKIE = "everest_device"
"""The known-device cookie (OWASP's "device cookies"): set on a successful password sign-in,
it lets that browser or client past an account lock an attacker caused from elsewhere."""

DEVICE_COOKIE_LIFETIME = 365 * 24 * 3600


class DeviceCookies:
    """Signed known-device cookies: ``v1.<user>.<device id>.<HMAC-SHA256>``.

    The key is 256 random bits in ``<data dir>/device.key`` (0600), made on first use; a
    cookie names the user it was issued to, so it helps that user only, and cannot be made
    or altered without the key. Deleting the key file forgets every device.
    """

    def __init__(self, data_dir: str | Path):
        path = Path(data_dir) / "device.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with open(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        self._key = path.read_bytes()

    def _mac(self, user: str, device: str) -> str:
        return hmac.new(self._key, f"v1|{user}|{device}".encode(), "sha256").hexdigest()

    def issue(self, user: str) -> str:
        """A new cookie value for ``user``."""
        device = secrets.token_hex(16)
        return f"v1.{user}.{device}.{self._mac(user, device)}"

    def device_of(self, value: str | None, user: str) -> str | None:
        """The device id ``value`` carries when it is a genuine cookie of ``user``, else
        None (absent, forged, altered, or another user's)."""
        parts = (value or "").split(".")
        if len(parts) < 4 or parts[0] != "v1":
            return None
        owner, device, mac = ".".join(parts[1:-2]), parts[-2], parts[-1]
        expected = self._mac(owner, device).encode()
        # as bytes: compare_digest raises on str with non-ASCII, and a cookie may hold any
        if owner != user or not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"),
                                                    expected):
            return None
        return device


SIGN_IN_LINK_LIFETIME = 120.0
"""Seconds a one-time sign-in link works (``everest-jupyter ui`` opens it at once)."""


class SignInLinks:
    """One-time codes that sign a browser in as a user (``everest-jupyter ui``).

    A code is 256 random bits, good once and for :data:`SIGN_IN_LINK_LIFETIME` seconds;
    only its SHA-256 is kept, in memory (a restart forgets outstanding codes, which is
    harmless for links opened at once). The code travels in the link's fragment, which
    browsers never send, so it is in no request line or access log.

    Bounded so that no user can make links fail for another: a user holds at most
    ``per_user`` outstanding links (a new one replaces their oldest), and all users together
    at most ``total`` (then :meth:`issue` raises ``ValueError``; with ``per_user`` links
    each that takes ``total / per_user`` users). Expired codes are dropped as new ones are
    issued, oldest first, at a constant cost per code.
    """

    def __init__(self, lifetime: float = SIGN_IN_LINK_LIFETIME, per_user: int = 5,
                 total: int = 10_000):
        self.lifetime = lifetime
        self.per_user = per_user
        self.total = total
        # code hash -> (user, expires), oldest first: every code lives equally long, so this
        # is also expiry order
        self._codes: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._of_user: dict[str, deque[str]] = {}

    def __len__(self) -> int:
        return len(self._codes)

    def issue(self, user: str, now: float | None = None) -> str:
        """A new code for ``user``; ValueError when every user together holds ``total``."""
        now = time.time() if now is None else now
        self._purge(now)
        mine = self._of_user.setdefault(user, deque())
        while len(mine) >= self.per_user:  # the user's oldest link gives way
            self._codes.pop(mine.popleft(), None)
        if len(self._codes) >= self.total:
            raise ValueError("too many sign-in links outstanding on this server; try again "
                             f"in {math.ceil(self.lifetime)} s")
        code = secrets.token_urlsafe(32)
        h = token_hash(code)
        self._codes[h] = (user, now + self.lifetime)
        mine.append(h)
        return code

    def redeem(self, code: str, now: float | None = None) -> str | None:
        """The user ``code`` signs in, once; None when unknown, used or expired."""
        now = time.time() if now is None else now
        h = token_hash(code)
        user, expires = self._codes.pop(h, (None, 0.0))
        if user is not None:
            self._forget(user, h)
        return user if expires > now else None

    def _purge(self, now: float) -> None:
        while self._codes:
            h, (user, expires) = next(iter(self._codes.items()))
            if expires > now:
                return
            del self._codes[h]
            self._forget(user, h)

    def _forget(self, user: str, h: str) -> None:
        mine = self._of_user.get(user)
        if mine is None:
            return
        with contextlib.suppress(ValueError):
            mine.remove(h)
        if not mine:
            del self._of_user[user]
