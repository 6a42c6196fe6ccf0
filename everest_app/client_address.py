"""A sign-in's real client address, vouched for by a proxy Everest trusts.

The relay's page and the hub's sign-in form post a user's password to Everest from their own
address, so an Everest that throttles sign-ins per address would count every user behind
them as one guesser. A proxy holding the **client-address key** (256 random bits in the local
server's ``<data dir>/client-address.key``, 0600, made on the server's first start) sends
the browser's address in :data:`HEADER`, with a timestamp and an HMAC-SHA256 under that key
over the address, the user name signed in as and the timestamp::

    X-Everest-Client-Address: v1 203.0.113.7 1765046400 <64 hex digits>

The server then counts failures against that address instead of the proxy's. It ignores the
header (and counts the connection's peer) when the MAC is wrong, the value is not an IP
address, or the timestamp is more than :data:`MAX_AGE` seconds away from its clock: a bare or
forged header, or one replayed later or for another user, gains nothing. No address is
trusted by itself, 127.0.0.1 included: any local process could claim any address, only the
key proves the proxy. A real Everest knows no such header and ignores it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from pathlib import Path

HEADER = "X-Everest-Client-Address"
KEY_FILE = "client-address.key"
"""The key's file name in the local server's data folder."""
MAX_AGE = 60.0
"""Seconds a signed address is good for, either way of the server's clock."""
_VERSION = "v1"
_STAMP = re.compile(r"[0-9]{1,12}")
_HEX_MAC = re.compile(r"[0-9a-f]{64}")


def create_key(path: str | Path) -> bytes:
    """The key in ``path``, made (256 random bits, 0600, never following a link) when the
    file does not exist yet."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_key(path)
    with open(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return read_key(path)


def read_key(path: str | Path) -> bytes:
    """The key in ``path``; ``ValueError`` saying what is wrong when it cannot serve as one
    (missing, unreadable, shorter than 16 bytes)."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the client-address key {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise ValueError(f"the client-address key {path} is too short ({len(key)} bytes; "
                         "copy the server's own file)")
    return key


def _mac(key: bytes, address: str, user: str, stamp: str) -> str:
    message = "\n".join((_VERSION, address, user, stamp)).encode("utf-8", "surrogatepass")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, address: str, user: str, now: float | None = None) -> str:
    """The :data:`HEADER` value vouching that ``address`` signs in as ``user`` now."""
    stamp = str(int(time.time() if now is None else now))
    return f"{_VERSION} {address} {stamp} {_mac(key, address, user, stamp)}"


def verify(key: bytes, value: str | None, user: str, now: float | None = None,
           max_age: float = MAX_AGE) -> str | None:
    """The client address ``value`` vouches for, for a sign-in as ``user``; None when the
    value is absent, malformed, not an IP address, too old (or too far ahead), or its MAC
    is not this key's."""
    parts = (value or "").split(" ")
    if len(parts) != 4 or parts[0] != _VERSION or not _STAMP.fullmatch(parts[2]) or \
            not _HEX_MAC.fullmatch(parts[3]):
        return None  # checked first: int() and compare_digest refuse odd text with errors
    _, address, stamp, mac = parts
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > max_age:
        return None
    if not hmac.compare_digest(mac, _mac(key, address, user, stamp)):
        return None
    return address
