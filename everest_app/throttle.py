"""Slowing password guessing down: per address first, without letting an attacker aim a
lockout (:class:`SignInThrottle`). Kept in memory; the local server's sign-in route, the
relay's page sign-in and the hub's EverestAuthenticator each hold one."""

from __future__ import annotations

import ipaddress
import time


def address_key(address: str) -> str:
    """Whom a failure counts against: the IPv4 address, or an IPv6 address's /64 (one
    host usually holds a whole /64, so single IPv6 addresses would be free to rotate)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SignInThrottle:
    """Slows password guessing down without handing an attacker a way to lock anyone out.

    Each limit works the same way: once reached, each further attempt must wait twice as long
    as the one before — 1 s, 2 s, 4 s ... up to ``backoff_max`` seconds — and is refused with
    a 429 before any password is checked; failures are forgotten ``backoff_max`` seconds
    after the last one.

    - A client without a known-device cookie of the user (an *untrusted* attempt) is
      throttled by its address first: after ``attempts`` failures for one user from one
      address, or ``4 * attempts`` from one address for any users.
    - The account itself is locked (for untrusted attempts only) once it has ``4 *
      attempts`` failures from at least ``lock_addresses`` different addresses: many
      addresses guessing one password. Failures from a few addresses never lock it, so a
      guesser elsewhere cannot keep its user out.
    - An attempt with the user's known-device cookie (the local server's
      ``everest_local.auth.DeviceCookies``) passes both; only that cookie's own failures
      count against it (``attempts``, then the waits), so a stolen cookie still guesses
      slowly.

    A success resets the user's count from that address (or that device).
    ``lock_addresses=None``: accounts are never locked, only addresses wait (a front end,
    such as the relay's page, that leaves locking accounts to Everest behind it).
    """

    def __init__(self, attempts: int = 5, backoff_max: float = 900.0,
                 lock_addresses: int | None = 10):
        self.attempts = attempts
        self.backoff_max = backoff_max
        self.lock_addresses = lock_addresses
        self._fails: dict[tuple[str, ...], tuple[int, float]] = {}
        # user -> {address: last failure}: who has been guessing this account
        self._guessers: dict[str, dict[str, float]] = {}

    def _keys(self, user: str, address: str, device: str | None
              ) -> list[tuple[tuple[str, ...], int]]:
        if device is not None:
            return [(("device", device), self.attempts)]
        address = address_key(address)
        return [(("pair", user, address), self.attempts),
                (("address", address), 4 * self.attempts),
                (("account", user), 4 * self.attempts)]

    def _guessed_from(self, user: str, now: float) -> int:
        seen = self._guessers.get(user, {})
        return sum(1 for last in seen.values() if now - last < self.backoff_max)

    def wait(self, user: str, address: str, device: str | None = None,
             now: float | None = None) -> float:
        """Seconds before an attempt for ``user`` from ``address`` (with the user's known
        ``device``, if it sent one) is accepted (0: now)."""
        now = time.time() if now is None else now
        longest = 0.0
        for key, limit in self._keys(user, address, device):
            if key[0] == "account" and (self.lock_addresses is None or self._guessed_from(
                    user, now) < self.lock_addresses):
                continue
            count, last = self._fails.get(key, (0, 0.0))
            if count >= limit and now - last < self.backoff_max:
                delay = min(2.0 ** (count - limit), self.backoff_max)
                longest = max(longest, last + delay - now)
        return longest

    def failed(self, user: str, address: str, device: str | None = None,
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self._fails) > 100_000:
            self._fails = {k: v for k, v in self._fails.items()
                           if now - v[1] < self.backoff_max}
            self._guessers = {u: seen for u, seen in self._guessers.items()
                              if self._guessed_from(u, now)}
        for key, _ in self._keys(user, address, device):
            count, last = self._fails.get(key, (0, 0.0))
            if now - last >= self.backoff_max:
                count = 0
            self._fails[key] = (count + 1, now)
        if device is None:
            seen = self._guessers.setdefault(user, {})
            seen[address_key(address)] = now
            if len(seen) > 4 * (self.lock_addresses or 1):  # enough to know; keep the newest
                for old in sorted(seen, key=seen.__getitem__)[:len(seen) // 2]:
                    del seen[old]

    def succeeded(self, user: str, address: str, device: str | None = None) -> None:
        if device is not None:
            self._fails.pop(("device", device), None)
        else:
            self._fails.pop(("pair", user, address_key(address)), None)
