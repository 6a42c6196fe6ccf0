"""A small client for Everest's REST API.

    >>> everest = EverestClient("https://everest.distcomp.org", token="...")
    >>> job = everest.submit("owner/alias", {"duration": 1})
    >>> everest.wait(job.id).state
    <JobState.DONE: 'DONE'>

Transport, retries and error mapping are :class:`everest_app.json_api.JsonApiClient`'s: a
submission is retried only when it provably never reached the server or the server said
429, so a job is never silently created twice. The client is safe to share between threads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import requests

from everest_app import config
from everest_app.errors import EverestError, JobTimeout, NotFoundError
from everest_app.job import Job
from everest_app.json_api import TOKEN_COOKIE, JsonApiClient

log = logging.getLogger(__name__)

__all__ = ["TOKEN_COOKIE", "EverestClient"]


class EverestClient(JsonApiClient):
    """A connection to one Everest server as one user.

    ``url`` defaults to ``EVEREST_URL`` then the configured profile; ``token`` to
    ``EVEREST_TOKEN``, ``EVEREST_TASK_TOKEN``, then the profile's token file. A token may also
    arrive as the ``access_token`` cookie in :attr:`session`'s jar (Everest sets it on login).

    Raises :class:`EverestError` at construction when no server URL can be found.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | tuple[float, float] = (5, 60),
        retries: int = 4,
        backoff: float = 0.2,
        pool_size: int = 32,
    ):
        if url is None or token is None:
            profile = config.load_profile(url=url)
            url = url or profile.url
            token = token or profile.token
        if not url:
            raise EverestError(
                "No Everest server configured: pass a URL, set EVEREST_URL, or run "
                "`everest-jupyter login --everest URL`.")
        super().__init__(url, token, timeout=timeout, retries=retries, backoff=backoff,
                         pool_size=pool_size)

    @property
    def session(self) -> requests.Session:
        """The keep-alive HTTP session (its cookie jar may hold Everest's token cookie)."""
        return self.http

    # -- tokens ----------------------------------------------------------------------------

    @classmethod
    def login(cls, url: str, username: str, password: str, *, label: str = "everest-jupyter",
              lifetime: int | None = None) -> str:
        """Obtain a new token for ``username`` and return it.

        Tries ``/api/auth/access_token`` and falls back to the older ``/auth/access_token``
        when the first is not there. Raises :class:`AuthError` on bad credentials.
        """
        body: dict[str, Any] = {"username": username, "password": password, "label": label}
        if lifetime is not None:
            body["lifetime"] = int(lifetime)
        with cls(url, token="") as anonymous:
            for path in ("/api/auth/access_token", "/auth/access_token"):
                try:
                    answer = anonymous._json("POST", path, json=body)
                except NotFoundError:
                    continue
                return answer["access_token"]
        raise NotFoundError(f"{url} has no token endpoint: is it an Everest server?")

    def token_info(self) -> dict[str, Any]:
        """What the server knows of the token in use (label, expiry, user)."""
        return self._json("GET", "/api/auth/access_token")

    def revoke_token(self) -> None:
        """Revoke the token in use; later calls with it get :class:`AuthError`."""
        self.request("DELETE", "/api/auth/access_token")

    # -- applications ------------------------------------------------------------------------

    def apps(self) -> list[dict[str, Any]]:
        """All applications visible to the user."""
        return self._json("GET", "/api/apps")

    def search_apps(self, name: str, *, page: int | None = None, page_size: int | None = None,
                    sort_by: str | None = None) -> list[dict[str, Any]]:
        """Applications whose name contains ``name``; paging and ``sort_by='jobs'`` optional."""
        params = {"name": name, "pagenum": page, "pagesize": page_size, "sortBy": sort_by}
        return self._json("GET", "/api/apps/search",
                          params={k: v for k, v in params.items() if v is not None})

    def app(self, app: str) -> dict[str, Any]:
        """An application's description, by 24-hex id or ``owner/alias``."""
        return self._json("GET", f"/api/apps/{_app_path(app)}")

    def submit(self, app: str, inputs: dict[str, Any], *, name: str | None = None,
               resources: list[str] | None = None) -> Job:
        """Submit a job of ``app`` with ``inputs``; returns the created job.

        Accepts 201 (current servers) and 200 (older ones). Raises :class:`BadRequestError`
        with the server's message when the inputs are refused.
        """
        body: dict[str, Any] = {"name": name or _default_job_name(app), "inputs": inputs}
        if resources:
            body["resources"] = list(resources)
        return Job.from_json(self._json("POST", f"/api/apps/{_app_path(app)}", json=body))

    # -- jobs ------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """All of the user's jobs."""
        return [Job.from_json(item) for item in self._json("GET", "/api/jobs")]

    def job(self, job_id: str) -> Job:
        """One job's current description."""
        return Job.from_json(self._json("GET", f"/api/jobs/{quote(job_id, safe='')}"))

    def cancel(self, job_id: str) -> None:
        """Ask the server to cancel a job; it turns CANCELLED once the resource confirms."""
        self.request("POST", f"/api/jobs/{quote(job_id, safe='')}/cancel")

    def delete_job(self, job_id: str) -> None:
        """Delete a job and its files."""
        self.request("DELETE", f"/api/jobs/{quote(job_id, safe='')}")

    def delete_jobs(self, name: str) -> None:
        """Delete every job of the user with this name."""
        self.request("DELETE", "/api/jobs", params={"name": name})

    def log(self, job_id: str) -> str:
        """The job's log as text, one event a line."""
        return self.request("GET", f"/api/jobs/{quote(job_id, safe='')}/log").text

    def save_log(self, job_id: str, path: str | os.PathLike) -> Path:
        """Stream the job's log into ``path``; returns the path."""
        return self._stream_to(f"/api/jobs/{quote(job_id, safe='')}/log", Path(path))

    def wait(self, job_id: str, *, timeout: float | None = None, interval: float = 0.5) -> Job:
        """Poll until the job is in a terminal state and return it.

        Raises :class:`JobTimeout` when ``timeout`` seconds pass first. Connection errors
        while polling propagate (after the transport's own retries).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.is_done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"Job {job_id} is still {job.state} after {timeout} s.")
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(pause, 0))

    # -- files ------------------------------------------------------------------------------

    def upload(self, source: str | os.PathLike | IO[bytes], *,
               filename: str | None = None) -> dict[str, Any]:
        """Upload a file (a path or a binary file object) for use as a job input.

        Returns ``{"uri", "filename", "length"}``; pass ``uri`` as the input's value.
        """
        with _opened(source) as (fileobj, default_name):
            files = {"file": (filename or default_name, fileobj, "application/octet-stream")}
            return self._json("POST", "/api/files/temp", files=files)

    def download(self, uri: str, path: str | os.PathLike) -> Path:
        """Stream the file at ``uri`` into ``path`` (written atomically); returns the path."""
        return self._stream_to(uri, Path(path))

    def read(self, uri: str) -> bytes:
        """The whole content of the file at ``uri``."""
        return self.request("GET", uri).content

    def delete_file(self, uri: str) -> None:
        """Delete one file."""
        self.request("DELETE", uri)

    def delete_temp_files(self) -> None:
        """Delete all of the user's uploaded temporary files."""
        self.request("DELETE", "/api/user/tmp_files")

    def _stream_to(self, uri: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.part")
        with self.request("GET", uri, stream=True) as response:
            try:
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(1 << 16):
                        out.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        os.replace(partial, path)
        return path


def _app_path(app: str) -> str:
    """The URL path segment(s) of an app: an id, or ``owner/alias`` with its slash kept."""
    return "/".join(quote(part, safe="") for part in app.strip("/").split("/"))


def _default_job_name(app: str) -> str:
    return f"{app.rsplit('/', 1)[-1]} {time.strftime('%Y-%m-%d %H:%M:%S')}"


@contextmanager
def _opened(source: str | os.PathLike | IO[bytes]) -> Iterator[tuple[IO[bytes], str]]:
    if hasattr(source, "read"):
        yield source, os.path.basename(getattr(source, "name", "") or "upload")
        return
    path = Path(source)
    with open(path, "rb") as f:
        yield f, path.name
