"""The relay page's sign-in (``POST /api/login``): whose address it is, whether it must wait,
and how Everest learns that address.

The relay posts the user's password to Everest from its own address, so without more an
Everest that throttles per address sees every relay user as one guesser: twenty failures by
anyone would make every relay sign-in wait. Hence, before anything reaches Everest:

- **the relay throttles its own sign-ins per client address** — the address of the
  browser's connection, or what ``X-Forwarded-For`` names when that connection comes from a
  configured trusted proxy (``trusted_proxies``) — with the same rules as the local server
  (:class:`everest_app.throttle.SignInThrottle`: ``login_attempts`` failures for one user
  from one address, 4x that for any users, then waits of 1 s doubling), answering 429 with
  ``Retry-After``. It never locks an account: one address's guesses cost only that address.
- **with the local server's client-address key** (``client_address_key_file``; the embedded
  relay reads the server's own), each sign-in carries the browser's address signed
  (:mod:`everest_app.client_address`), so the server's throttle counts that browser too,
  and its account lock sees how many addresses really guessed.
"""

from __future__ import annotations

import ipaddress

from tornado.httputil import HTTPServerRequest

from everest_app import client_address
from everest_app.throttle import SignInThrottle
from launcher.relay.config import RelayConfig


class PageSignIn:
    """The relay page's sign-in throttle and client-address signer (module docstring)."""

    def __init__(self, config: RelayConfig):
        self.throttle = SignInThrottle(config.login_attempts, config.login_backoff_max,
                                       lock_addresses=None)
        self.trusted = tuple(ipaddress.ip_network(value, strict=False)
                             for value in config.trusted_proxies)
        path = config.client_address_key_file
        self.key = client_address.read_key(path) if path is not None else None

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client_address(self, request: HTTPServerRequest) -> str:
        """The browser's address: the connection's peer, unless that is a trusted proxy;
        then ``X-Forwarded-For`` read from the right, the first hop that is not a trusted
        proxy (an entry that is not an address stops the walk at the hop before it)."""
        address = request.remote_ip or ""
        if not self._trusted(address):
            return address
        hops = [hop.strip() for value in request.headers.get_list("X-Forwarded-For")
                for hop in value.split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address
            address = hop
            if not self._trusted(hop):
                return hop
        return address

    def wait(self, user: str, address: str) -> float:
        """Seconds before ``address`` may try to sign in as ``user`` (0: now)."""
        return self.throttle.wait(user, address)

    def failed(self, user: str, address: str) -> None:
        self.throttle.failed(user, address)

    def succeeded(self, user: str, address: str) -> None:
        self.throttle.succeeded(user, address)

    def headers(self, user: str, address: str) -> dict[str, str]:
        """What tells Everest who signs in: the signed address, when the relay has the key."""
        if self.key is None:
            return {}
        return {client_address.HEADER: client_address.sign(self.key, address, user)}
