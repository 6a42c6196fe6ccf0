"""The options of a new session, checked in one place: the relay's API and the local
server's ``jupyter-session`` plugin (which mints sessions for web-form submissions) accept
exactly the same values."""

from __future__ import annotations

import re

URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
"""A URL path: starts with one ``/``; no query, fragment, scheme or host."""


def check_default_url(value: object) -> str:
    """The page a session opens on (``/lab``, ``/lab/tree/x.ipynb``, ...).

    Raises ``ValueError`` unless it is a path on the session itself: no ``//host/``, no
    ``..``, no query or fragment (the relay adds the notebook's token as the query).
    """
    if not isinstance(value, str) or len(value) > 200 or not URL_PATH.match(value) \
            or "//" in value or ".." in value:
        raise ValueError("'default_url' must be a path on the session such as /lab "
                         "(no host, query or '..')")
    return value


def check_base_prefix(value: object) -> str:
    """A hub's prefix for a server (``/user/alice/``); raises ``ValueError``."""
    if not isinstance(value, str) or len(value) > 200 or not URL_PATH.match(value) \
            or not value.endswith("/") or "//" in value or ".." in value:
        raise ValueError("'base_url' must be the hub's prefix for the server, such as "
                         "/user/alice/")
    return value
