"""The errors the Everest client raises.

Every message says what happened and what to do next, because it is what a user reads
when a command fails.
"""

from __future__ import annotations


class EverestError(Exception):
    """Base of all client errors. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self) -> str:
        return self.message


class AuthError(EverestError):
    """401 or 403: the token is missing, expired, revoked, or not allowed to do this."""


class NotFoundError(EverestError):
    """404: no such application, job or file (or it belongs to someone else)."""


class BadRequestError(EverestError):
    """400/409/422: the server refused the request; the message is the server's."""


class TooManyRequestsError(EverestError):
    """429: a limit was reached; ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, *, retry_after: float, status: int = 429,
                 url: str | None = None):
        super().__init__(message, status=status, url=url)
        self.retry_after = retry_after


class ServerError(EverestError):
    """5xx after retries: the server failed."""


class EverestConnectionError(EverestError):
    """The server could not be reached or did not answer in time."""


class JobTimeout(EverestError):
    """A wait for a job ended before the job did."""
