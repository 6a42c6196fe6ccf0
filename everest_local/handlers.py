"""Everest's REST API as tornado handlers (guesses listed in ``docs/architecture.md``).

Every answer of an API route is JSON (the job log and downloads aside); every error,
including unknown routes (404) and unsupported methods (405), is ``{"message": ...}``.
A token is taken from ``Authorization: Bearer`` or, failing that, the ``access_token``
cookie. Cookie-authenticated (and anonymous) unsafe requests that carry an ``Origin`` other
than this server, or ``Sec-Fetch-Site: cross-site``, are refused with 403: browsers send
those headers, API clients do not, and together with SameSite cookies that stops cross-site
request forgery, the login form included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import mimetypes
import os
import time
from typing import Any
from urllib.parse import quote, urlsplit

import tornado.web

from everest_app import client_address, strict_json
from everest_app.errors import (
    AuthError,
    BadRequestError,
    EverestError,
    NotFoundError,
    TooManyRequestsError,
)
from everest_app.json_api import TOKEN_COOKIE
from everest_local.auth import (
    DEFAULT_LIFETIME,
    DEVICE_COOKIE,
    DEVICE_COOKIE_LIFETIME,
    MAX_LIFETIME,
    TokenInfo,
    check_password,
)
from everest_local.core import MAX_BATCH, Core, iso_time
from everest_local.disk import DISK_FULL_MESSAGE, is_disk_full
from everest_local.files import PendingUpload
from everest_local.multipart import FirstFilePart, MultipartError, boundary_of
from everest_local.openapi import (
    ARRAY,
    JOB,
    OBJECT,
    Param,
    RouteTable,
    json_answer,
    json_body,
    operation,
    operations_of,
    query,
)

log = logging.getLogger(__name__)

ROUTES = RouteTable()
"""Every API route, declared once by the ``@ROUTES(path)`` decorator of its handler."""

_OK_OBJECT = {"200": json_answer(OBJECT)}
_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class ApiHandler(tornado.web.RequestHandler):
    """Base of every API route: counting, method check, CSRF check, auth, JSON errors."""

    route = "?"  # the path template, set by @ROUTES

    def initialize(self, core: Core) -> None:
        self.core = core
        self.auth: TokenInfo | None = None
        self.bearer = False

    def compute_etag(self) -> None:
        return None  # answers are no-store: hashing every body would be wasted work

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        method = self.request.method or "GET"
        self.core.stats[f"{method} {self.route}"] += 1
        impl = getattr(type(self), method.lower(), None)
        if impl is None or impl is getattr(tornado.web.RequestHandler, method.lower(), None):
            raise tornado.web.HTTPError(405, f"{method} is not allowed on {self.route}")
        token = self._token()
        if method in _UNSAFE and not self.bearer:
            self._refuse_cross_site()
        if not operations_of(type(self))[method.lower()].public:
            self.auth = self.core.tokens.lookup(token)
            if self.auth is None:
                raise AuthError("missing, expired or revoked access token: get one with "
                                "POST /api/auth/access_token", status=401)

    def _token(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            self.bearer = True
            return value.strip()
        return self.get_cookie(TOKEN_COOKIE)

    def _refuse_cross_site(self) -> None:
        headers = self.request.headers
        if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise AuthError("cross-site request refused", status=403)
        origin = headers.get("Origin")
        if origin is None:
            return
        if origin == "null" or urlsplit(origin).netloc.lower() != self.request.host.lower():
            raise AuthError(f"cross-site request from {origin} refused", status=403)

    @property
    def user(self) -> str:
        assert self.auth is not None
        return self.auth.user

    # -- output ------------------------------------------------------------------------------

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(strict_json.dumps(data, separators=(",", ":")))

    def send_text(self, text: str) -> None:
        """Send JSON that is already text."""
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(text.encode("utf-8"))

    def json_body(self) -> Any:
        if not self.request.body:
            return None
        try:
            return strict_json.loads(self.request.body)
        except strict_json.JSONInputError as exc:
            raise BadRequestError(f"the body is refused: {exc}", status=400) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        status, message = _error_of(exc, status_code, self._reason)
        self.set_status(status)
        if status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="everest"')
        if isinstance(exc, TooManyRequestsError):
            self.set_header("Retry-After", str(max(1, math.ceil(exc.retry_after))))
        if status == 405:
            self.set_header("Allow", ", ".join(m for m in ("GET", "POST", "DELETE")
                                               if _implements(type(self), m)))
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"message": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, EverestError | tornado.web.HTTPError):
            return  # an expected error answer, already in the access log
        if is_disk_full(value):
            log.warning("%s %s: %s", self.request.method, self.route, value)
            return
        super().log_exception(typ, value, tb)


def _implements(cls: type, method: str) -> bool:
    impl = getattr(cls, method.lower(), None)
    return impl is not None and impl is not getattr(tornado.web.RequestHandler, method.lower())


def _error_of(exc: BaseException | None, status: int, reason: str) -> tuple[int, str]:
    if is_disk_full(exc):
        return 507, DISK_FULL_MESSAGE
    if isinstance(exc, EverestError):
        if isinstance(exc, NotFoundError):
            return 404, exc.message
        if isinstance(exc, BadRequestError):
            return 400, exc.message
        if isinstance(exc, AuthError):
            return exc.status or 401, exc.message
        return exc.status or 500, exc.message
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code, exc.log_message or exc.reason or reason
    if status >= 500:
        return status, f"internal server error ({type(exc).__name__ if exc else reason}); " \
                       "see the server log"
    return status, reason


class NotFoundHandler(ApiHandler):
    """Any unknown route: 404 for every method."""

    route = "<unknown>"

    def prepare(self) -> None:
        self.core.stats[f"{self.request.method} {self.route}"] += 1
        raise NotFoundError(f"no such endpoint: {self.request.method} {self.request.path}",
                            status=404)


# -- tokens ------------------------------------------------------------------------------------


@ROUTES("/api/auth/access_token", aliases=("/auth/access_token",))
class TokenHandler(ApiHandler):
    """``/api/auth/access_token`` and ``/auth/access_token``: obtain, inspect, revoke."""

    @operation("sign in: a token (also set as the access_token cookie)", public=True,
               body=json_body({
                   "type": "object", "required": ["username", "password"],
                   "properties": {
                       "username": {"type": "string"},
                       "password": {"type": "string"},
                       "label": {"type": "string", "maxLength": 200},
                       "lifetime": {"type": "integer", "minimum": 1,
                                    "maximum": MAX_LIFETIME}}}),
               ok={"200": json_answer({"type": "object", "required": ["access_token"],
                                       "properties": {"access_token": {"type": "string"}}})},
               parameters=({
                   "name": client_address.HEADER, "in": "header", "schema": {"type": "string"},
                   "description": "the browser's address, from a proxy holding this server's "
                                  "client-address key: 'v1 <address> <unix time> <HMAC>' "
                                  "(everest_app/client_address.py); ignored unless genuine"},),
               errors=("400", "401", "403", "429", "507"))
    async def post(self) -> None:
        body = self._credentials()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequestError("send 'username' and 'password'", status=400)
        label = body.get("label") or ""
        if not isinstance(label, str) or len(label) > 200:
            raise BadRequestError("'label' must be a string of at most 200 characters",
                                  status=400)
        lifetime = body.get("lifetime", DEFAULT_LIFETIME)
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not (
                0 < lifetime <= MAX_LIFETIME):
            raise BadRequestError(f"'lifetime' must be seconds between 1 and {MAX_LIFETIME}",
                                  status=400)
        address = self._client_address(username)
        device = self.core.devices.device_of(self.get_cookie(DEVICE_COOKIE), username)
        wait = self.core.sign_ins.wait(username, address, device)
        if wait > 0:
            raise TooManyRequestsError(
                f"too many failed sign-ins; try again in {math.ceil(wait)} s", retry_after=wait)
        stored = self.core.store.password_hash(username)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, check_password, password, stored)
        if not ok:
            self.core.sign_ins.failed(username, address, device)
            raise AuthError("wrong username or password", status=401)
        self.core.sign_ins.succeeded(username, address, device)
        token = self.core.tokens.issue(username, label, lifetime)
        if device is None:  # this client is now a known device of the user
            self.set_cookie(DEVICE_COOKIE, self.core.devices.issue(username), path="/",
                            httponly=True, samesite="Strict",
                            secure=self.request.protocol == "https",
                            expires=time.time() + DEVICE_COOKIE_LIFETIME)
        self.set_cookie(TOKEN_COOKIE, token, path="/", httponly=True, samesite="Lax",
                        secure=self.request.protocol == "https",
                        expires=time.time() + lifetime)
        self.send_json({"access_token": token})

    _warned = 0.0

    def _client_address(self, username: str) -> str:
        """Whom this sign-in's failures count against: the connection's peer, or the
        address a proxy holding the client-address key vouches for (the relay's page, a
        hub; see :mod:`everest_app.client_address`). ``X-Forwarded-For`` is not trusted,
        nor is any peer by its address alone."""
        peer = self.request.remote_ip or ""
        value = self.request.headers.get(client_address.HEADER)
        if value is None:
            return peer
        vouched = client_address.verify(self.core.client_address_key, value, username)
        if vouched is None:
            now = time.monotonic()
            if now - TokenHandler._warned > 60:  # once a minute: a flood is not a log flood
                TokenHandler._warned = now
                log.warning("a sign-in from %s sent %s without a valid signature (another "
                            "key, too old, or forged); counted against %s itself", peer,
                            client_address.HEADER, peer)
            return peer
        return vouched

    def _credentials(self) -> dict[str, Any]:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return {k: self.get_body_argument(k) for k in self.request.body_arguments}
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequestError("send a JSON object with 'username' and 'password'",
                                  status=400)
        return body

    @operation("who the token belongs to", ok=_OK_OBJECT)
    def get(self) -> None:
        info = self.auth
        assert info is not None
        data = {"username": info.user, "label": info.label, "created": iso_time(info.created),
                "expires": iso_time(info.expires), "task": info.job_id is not None}
        if info.job_id:
            data["job"] = info.job_id
        self.send_json(data)

    @operation("revoke the token", ok=_OK_OBJECT)
    def delete(self) -> None:
        assert self.auth is not None
        auth = self.auth
        self.core.disk.room(lambda: self.core.tokens.revoke(auth))
        self.clear_cookie(TOKEN_COOKIE, path="/")
        self.send_json({})


@ROUTES("/api/auth/signin_link")
class SignInLinkHandler(ApiHandler):
    """``POST``: a one-time link that signs a browser in as the caller (``everest-jupyter
    ui``). Task tokens may not mint one: a job must not open its owner's browser session."""

    @operation("a one-time link that signs a browser in as the caller",
               ok={"200": json_answer({
                   "type": "object", "required": ["url", "path", "expires_in"],
                   "properties": {"url": {"type": "string"}, "path": {"type": "string"},
                                  "expires_in": {"type": "integer"}}})})
    def post(self) -> None:
        assert self.auth is not None
        if self.auth.job_id is not None:
            raise AuthError("a task token cannot make a sign-in link", status=403)
        try:
            code = self.core.sign_in_links.issue(self.auth.user)
        except ValueError as exc:
            raise TooManyRequestsError(str(exc),
                                       retry_after=self.core.sign_in_links.lifetime) from None
        self.send_json({"url": f"{self.core.url}/signin#{code}", "path": f"/signin#{code}",
                        "expires_in": int(self.core.sign_in_links.lifetime)})


@ROUTES("/api/auth/signin")
class SignInHandler(ApiHandler):
    """``POST {"code"}``: redeem a one-time sign-in code (the ``/signin`` page sends the
    link's fragment); sets the session cookie like a password sign-in."""

    @operation("redeem a one-time sign-in code (sets the access_token cookie)", public=True,
               body=json_body({"type": "object", "required": ["code"],
                               "properties": {"code": {"type": "string"}}}),
               ok={"200": json_answer({"type": "object", "required": ["username"],
                                       "properties": {"username": {"type": "string"}}})},
               errors=("400", "401", "403", "429", "507"))
    def post(self) -> None:
        body = self.json_body()
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            raise BadRequestError("send {\"code\": ...} from a sign-in link", status=400)
        user = self.core.sign_in_links.redeem(code)
        if user is None:
            raise AuthError("this sign-in link was already used or has expired: run "
                            "'everest-jupyter ui' for a new one, or log in with a password "
                            "('everest-jupyter server add-user NAME' sets one)", status=401)
        token = self.core.tokens.issue(user, "web (sign-in link)", DEFAULT_LIFETIME)
        self.set_cookie(TOKEN_COOKIE, token, path="/", httponly=True, samesite="Lax",
                        secure=self.request.protocol == "https",
                        expires=time.time() + DEFAULT_LIFETIME)
        self.send_json({"username": user})


# -- applications ----------------------------------------------------------------------------


@ROUTES("/api/apps")
class AppsHandler(ApiHandler):
    @operation("applications", ok={"200": json_answer(ARRAY)})
    def get(self) -> None:
        cat = self.core.catalog
        keys = sorted(cat.apps, key=lambda k: cat.apps[k].name.lower())
        self.send_json([cat.summary(k, self.core.app_jobs[k]) for k in keys])


@ROUTES("/api/apps/search")
class AppSearchHandler(ApiHandler):
    """``?name=`` substring of name or alias; ``pagenum`` (from 1), ``pagesize``,
    ``sortBy=jobs`` (most used first) or ``name`` (the default)."""

    @operation("applications by name", errors=("400",),
               parameters=(query("name", {"type": "string"}),
                           query("pagenum", {"type": "integer", "minimum": 1}),
                           query("pagesize", {"type": "integer", "minimum": 1}),
                           query("sortBy", {"type": "string", "enum": ["name", "jobs"]})),
               ok={"200": json_answer(ARRAY)})
    def get(self) -> None:
        cat = self.core.catalog
        needle = self.get_query_argument("name", "").lower()
        keys = [k for k, a in cat.apps.items()
                if needle in a.name.lower() or needle in a.alias.lower()]
        sort_by = self.get_query_argument("sortBy", "name")
        if sort_by == "jobs":
            keys.sort(key=lambda k: (-self.core.app_jobs[k], cat.apps[k].name.lower()))
        elif sort_by in ("name", ""):
            keys.sort(key=lambda k: cat.apps[k].name.lower())
        else:
            raise BadRequestError(f"sortBy must be 'jobs' or 'name', not {sort_by!r}",
                                  status=400)
        page = self._int("pagenum", 1)
        size = self._int("pagesize", 20 if "pagenum" in self.request.arguments else len(keys))
        start = (page - 1) * size
        self.send_json([cat.summary(k, self.core.app_jobs[k]) for k in keys[start:start + size]])

    def _int(self, name: str, default: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return max(default, 1)
        if not raw.isdigit() or int(raw) < 1:
            raise BadRequestError(f"{name} must be a positive integer", status=400)
        return int(raw)


@ROUTES("/api/apps/{app}", app=Param("an application id or owner/alias",
                                       pattern=r"[^/]+(?:/[^/]+)?"))
class AppHandler(ApiHandler):
    """``/api/apps/<id>`` or ``/api/apps/<owner>/<alias>``: describe (GET), submit (POST)."""

    @operation("an application's description", ok=_OK_OBJECT, errors=("404",))
    def get(self, ref: str) -> None:
        found = self.core.catalog.find(ref)
        if found is None:
            raise NotFoundError(f"no application {ref!r}", status=404)
        description = self.core.catalog.description(found[0])
        describe = self.core.hooks.app_decorators.get(found[1].alias)
        if describe is not None:
            description = describe(self.user, description) or description
        self.send_json(description)

    @operation("submit a job", errors=("400", "404"),
               body=json_body({"type": "object",
                               "properties": {"name": {"type": "string"},
                                              "inputs": {"type": "object"},
                                              "resources": {"type": "array",
                                                            "items": {"type": "string"}}}}),
               ok={"201": json_answer(JOB, "the new job")})
    async def post(self, ref: str) -> None:
        job = await self.core.submit(self.user, ref, self.json_body())
        self.send_json(job, 201)


# -- resources -------------------------------------------------------------------------------


@ROUTES("/api/resources")
class ResourcesHandler(ApiHandler):
    """The resources and pools the caller may use (read-only: they come from the server's
    resources file); ``?app=<id or owner/alias>``: only those that app's jobs may use."""

    @operation("resources the caller may use", errors=("404",),
               parameters=(query("app", {"type": "string"}),),
               ok={"200": json_answer(ARRAY)})
    def get(self) -> None:
        ref = self.get_query_argument("app", None)
        alias = None
        if ref is not None:
            found = self.core.catalog.find(ref)
            if found is None:
                raise NotFoundError(f"no application {ref!r}", status=404)
            alias = found[1].alias
        self.send_json(self.core.resources.visible(self.user, alias))


@ROUTES("/api/resources/{resource}", resource=Param("a resource id or name"))
class ResourceHandler(ApiHandler):
    @operation("one resource", ok=_OK_OBJECT, errors=("404",))
    def get(self, ref: str) -> None:
        found = self.core.resources.get_visible(self.user, ref)
        if found is None:
            raise NotFoundError(f"no resource {ref!r}", status=404)
        self.send_json(found)


# -- jobs ------------------------------------------------------------------------------------


CURSOR_HEADER = "X-Everest-Cursor"
"""The header of a jobs-ended listing's answer: the ``ended_after`` to ask with next."""


@ROUTES("/api/extensions")
class ExtensionsHandler(ApiHandler):
    """``GET /api/extensions``: what this server offers beyond Everest's API
    (docs/api-extensions.md); 404, as on Everest itself, with ``--plain-api``."""

    @operation("this server's extensions of Everest's API", errors=("404",),
               ok={"200": json_answer({"type": "object", "properties": {
                   "batch_submit": {"type": "object"}, "ended_wait": {"type": "object"}}})})
    def get(self) -> None:
        if self.core.settings.plain_api:
            raise NotFoundError(f"no such endpoint: GET {self.request.path}", status=404)
        self.send_json({
            "batch_submit": {"path": "/api/jobs", "method": "POST", "max_jobs": MAX_BATCH},
            "ended_wait": {"path": "/api/jobs", "parameters": ["ended_after", "wait"],
                           "cursor_header": CURSOR_HEADER,
                           "max_wait": self.core.settings.max_wait}})


@ROUTES("/api/jobs")
class JobsHandler(ApiHandler):
    """``GET``: the caller's jobs; with ``ended_after`` (an extension), only those that
    ended since, waiting up to ``wait`` seconds for one. ``POST`` (an extension): submit a
    batch of jobs, all or none. ``DELETE ?name=``: the caller's jobs of a name."""

    _gone: asyncio.Future[None] | None = None

    @operation("the caller's jobs, newest first; with ended_after (this server's extension): "
               "those that ended after the cursor, oldest end first, the next cursor in the "
               f"{CURSOR_HEADER} header", errors=("400",),
               parameters=(
                   query("ended_after", {"type": "string"}),
                   query("wait", {"type": "number", "minimum": 0})),
               ok={"200": {**json_answer({"type": "array", "items": JOB}), "headers": {
                   CURSOR_HEADER: {"schema": {"type": "string"},
                                   "description": "with ended_after: the ended_after of the "
                                                  "next request (docs/api-extensions.md)"}}}})
    async def get(self) -> None:
        raw = self.get_query_argument("ended_after", None)
        if raw is None or self.core.settings.plain_api:
            self.send_text(self.core.jobs_text(self.user))
            return
        cursor = self.core.ended_cursor() if raw == "now" else _number(raw, "ended_after")
        wait = _number(self.get_query_argument("wait", "0"), "wait")
        self._gone = asyncio.get_running_loop().create_future()
        text, cursor = await self.core.wait_ended(self.user, cursor, wait, self._gone)
        if self._gone.done():
            return  # nobody to answer
        self.set_header(CURSOR_HEADER, repr(cursor))
        self.send_text(text)

    def on_connection_close(self) -> None:
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        super().on_connection_close()

    @operation("submit a batch of jobs, all or none (this server's extension; see "
               "GET /api/extensions)", errors=("400", "404"),
               body=json_body({"type": "object", "required": ["jobs"], "properties": {
                   "jobs": {"type": "array", "maxItems": MAX_BATCH, "items": {
                       "type": "object", "required": ["app"],
                       "properties": {"app": {"type": "string"}, "name": {"type": "string"},
                                      "inputs": {"type": "object"},
                                      "resources": {"type": "array",
                                                    "items": {"type": "string"}}}}}}}),
               ok={"201": json_answer({"type": "array", "items": JOB}, "the new jobs")})
    async def post(self) -> None:
        if self.core.settings.plain_api:
            raise tornado.web.HTTPError(405, f"POST is not allowed on {self.route}")
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequestError("send {\"jobs\": [...]}", status=400)
        self.send_json(await self.core.submit_many(self.user, body.get("jobs")), 201)

    @operation("delete the caller's jobs of a name", errors=("400",),
               parameters=(query("name", {"type": "string"}, required=True),), ok=_OK_OBJECT)
    def delete(self) -> None:
        name = self.get_query_argument("name", None)
        if not name:
            raise BadRequestError("say which jobs to delete: DELETE /api/jobs?name=<name>",
                                  status=400)
        self.send_json({"deleted": self.core.disk.room(
            lambda: self.core.delete_named(self.user, name))})


def _number(raw: str, name: str) -> float:
    """A query argument that must be a finite number of at least 0 (400 otherwise)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadRequestError(f"{name} must be a number of at least 0, not {raw[:40]!r}",
                              status=400)
    return value


_JOB_ID = Param("a job id")


@ROUTES("/api/jobs/{job}", job=_JOB_ID)
class JobHandler(ApiHandler):
    @operation("a job", ok={"200": json_answer(JOB)}, errors=("404",))
    def get(self, job_id: str) -> None:
        self.send_text(self.core.job_text(self.user, job_id))

    @operation("delete a job, its log and files", ok=_OK_OBJECT, errors=("404",))
    def delete(self, job_id: str) -> None:
        self.core.disk.room(lambda: self.core.delete(self.user, job_id))
        self.send_json({})


@ROUTES("/api/jobs/{job}/cancel", job=_JOB_ID)
class JobCancelHandler(ApiHandler):
    @operation("cancel a job", ok={"200": json_answer(JOB)}, errors=("404",))
    def post(self, job_id: str) -> None:
        self.send_json(self.core.cancel(self.user, job_id))


@ROUTES("/api/jobs/{job}/log", job=_JOB_ID)
class JobLogHandler(ApiHandler):
    @operation("a job's log", errors=("404",),
               ok={"200": {"description": "the log, one event a line",
                           "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def get(self, job_id: str) -> None:
        text = self.core.log_text(self.user, job_id)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(text.encode("utf-8"))


# -- files -----------------------------------------------------------------------------------


@ROUTES("/api/files/temp")
@tornado.web.stream_request_body
class UploadHandler(ApiHandler):
    """``POST /api/files/temp`` multipart: the first file part, whatever its field name.

    The body is streamed to disk as it arrives (see :mod:`everest_local.multipart`), so
    uploads are bounded by ``max_upload_size``, not by memory. The caller's storage quota
    (``max_stored_bytes``) is checked before a byte is read, against the declared
    ``Content-Length`` (a client that sent ``Expect: 100-continue`` never sends the body),
    and again as the file streams: once it would not fit, the partial file is removed, the
    429 sent at once and the connection closed, so no more of it is read.
    """

    def prepare(self) -> None:
        self.upload: PendingUpload | None = None
        self.parser: FirstFilePart | None = None
        self.failure: Exception | None = None
        self.room: int | None = None
        super().prepare()
        self.request.connection.set_max_body_size(self.core.settings.max_upload_size)
        try:
            boundary = boundary_of(self.request.headers.get("Content-Type", ""))
        except MultipartError as exc:
            raise BadRequestError(f"{exc} (a file part, field 'file')", status=400) from exc
        declared = self.request.headers.get("Content-Length", "")
        # the file is the body less its multipart framing: never more than this smaller
        self.core.check_storage(self.user, max(0, int(declared) - _MULTIPART_FRAMING)
                                if declared.isdigit() else 0)
        if self.core.settings.max_stored_bytes:
            self.room = self.core.settings.max_stored_bytes - self.core.store.stored_bytes(
                self.user)
        self.upload = self.core.files.begin_upload()
        self.parser = FirstFilePart(boundary, self.upload.open)

    def data_received(self, chunk: bytes) -> None:
        if self.failure is not None or self.parser is None:
            return
        try:
            self.parser.feed(chunk)
            if self.room is not None and self.parser.length > self.room:
                self.core.check_storage(self.user, self.parser.length)
        except TooManyRequestsError as exc:
            self.failure = exc
            assert self.upload is not None
            self.upload.abort()
            self.send_error(429, exc_info=(type(exc), exc, None))  # now: read no more
        except (MultipartError, ValueError, OSError) as exc:
            self.failure = exc  # answered in post(), once the body has been read

    @operation("upload a file (multipart, the first file part)", errors=("400",),
               body={"required": True, "content": {"multipart/form-data": {"schema": {
                   "type": "object", "required": ["file"],
                   "properties": {"file": {"type": "string", "format": "binary"}}}}}},
               ok={"200": json_answer({"type": "object", "required": ["uri"],
                                       "properties": {"uri": {"type": "string"}}})})
    async def post(self) -> None:
        assert self.parser is not None and self.upload is not None
        if self._finished:
            return  # refused while the body streamed
        try:
            if self.failure is not None:
                raise self.failure
            if self.parser.close() is None:
                raise MultipartError("no file in the request: send multipart/form-data with "
                                     "a file part (field 'file')")
            uri, path, length = self.upload.commit()
        except (MultipartError, ValueError) as exc:
            self.upload.abort()
            raise BadRequestError(str(exc), status=400) from exc
        except OSError:
            self.upload.abort()
            raise
        try:
            self.core.check_storage(self.user, length)
            self.core.store.add_file(uri, self.user, "temp", None, path.name, str(path),
                                     length)
        except BaseException:
            self.core.files.remove_paths([str(path)])  # nothing half-stored stays
            raise
        self.send_json({"uri": uri, "filename": path.name, "length": length})

    def on_connection_close(self) -> None:
        if self.upload is not None and self.upload.file is not None:
            self.upload.abort()  # the client went away mid-upload
        super().on_connection_close()  # ends the wait for the rest of the body


_MULTIPART_FRAMING = 64 << 10
"""Bytes of a multipart upload's body allowed to be framing (boundaries, part headers,
other fields): the declared length less this is a floor on the file's size."""


@ROUTES("/api/files/{file}", file=Param("the rest of the file's URI: temp/<folder>/<name> "
                                        "or jobs/<job>/<name>", pattern=".+"))
class FileHandler(ApiHandler):
    """``/api/files/...``: download (GET) or remove (DELETE) one of the caller's files."""

    def _row(self) -> dict[str, Any]:
        row = self.core.user_file(self.user, self.request.path)
        if row is None:
            raise NotFoundError(f"no file {self.request.path}", status=404)
        return row

    @operation("download one of the caller's files", errors=("404",),
               ok={"200": {"description": "the bytes"}})
    async def get(self, _: str) -> None:
        row = self._row()
        ctype = mimetypes.guess_type(row["name"])[0] or "application/octet-stream"
        self.set_header("Content-Type", ctype)
        self.set_header("Content-Disposition",
                        f"attachment; filename*=UTF-8''{quote(row['name'], safe='')}")
        try:
            # never through a link: a stored file is always a regular file
            f = open(os.open(row["path"], os.O_RDONLY | os.O_NOFOLLOW), "rb")  # noqa: SIM115
        except OSError as exc:
            raise NotFoundError(f"file {self.request.path} is gone from disk", status=404) \
                from exc
        with f:
            self.set_header("Content-Length", str(f.seek(0, 2)))
            f.seek(0)
            while chunk := f.read(1 << 18):
                self.write(chunk)
                await self.flush()
        self.finish()

    @operation("delete one of the caller's files", ok=_OK_OBJECT, errors=("404",))
    def delete(self, _: str) -> None:
        row = self._row()
        paths = self.core.disk.room(lambda: self.core.store.delete_file(row["uri"]))
        self.core.files.remove_paths(paths)
        self.send_json({})


@ROUTES("/api/user/tmp_files")
class TmpFilesHandler(ApiHandler):
    @operation("delete all of the caller's uploads", ok=_OK_OBJECT)
    def delete(self) -> None:
        paths = self.core.disk.room(lambda: self.core.store.delete_temp_files(self.user))
        self.core.files.remove_paths(paths)
        self.send_json({"deleted": len(paths)})


@ROUTES("/api/openapi.json")
class OpenApiHandler(ApiHandler):
    """``GET /api/openapi.json``: the API's OpenAPI description (no token needed)."""

    @operation("this description", public=True, ok=_OK_OBJECT)
    def get(self) -> None:
        self.send_json(ROUTES.document(self.core.url))


@ROUTES("/_local/stats")
class StatsHandler(ApiHandler):
    """``GET /_local/stats``: request counts per route (no user data; no token needed)."""

    @operation("request counts per route", public=True, ok=_OK_OBJECT)
    def get(self) -> None:
        self.send_json({"requests": dict(self.core.stats)})


def api_routes(core: Core) -> list[tuple[str, type, dict[str, Any]]]:
    """The API's URL table, from :data:`ROUTES` (declaration order)."""
    return ROUTES.urls({"core": core})
