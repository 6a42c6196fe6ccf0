"""Tornado handlers for the web UI's page shells and static assets.

A page shell carries no user data beyond the id in its own URL; everything else is fetched
by the page's ES module from the REST API with the session cookie.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import tornado.web

from everest_app.json_api import TOKEN_COOKIE
from everest_app.states import QUEUED_STATES, TERMINAL_STATES

WEB_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"

# Pages load only our own scripts and styles; no inline script runs, nothing frames us.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def asset_url(path: str) -> str:
    """The URL of a static asset with its content hash, so browsers may cache it for long.

    Raises ``tornado.web.HTTPError`` (404) when the asset does not exist.
    """
    version = AssetHandler.get_version({"static_path": str(STATIC_DIR)}, path)
    if version is None:
        raise tornado.web.HTTPError(404, f"no asset {path}")
    return f"/assets/{path}?v={version[:16]}"


class _SecureHeaders:
    """Mixin: the response headers every web-UI answer carries, and errors as JSON
    ``{"message"}`` like the API's (never tornado's HTML page)."""

    def set_default_headers(self) -> None:  # type: ignore[override]
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")

    def write_error(self, status_code: int, **kwargs: Any) -> None:  # type: ignore[override]
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason  # type: ignore[attr-defined]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = "internal server error; see the server log"
        self.clear_header("Content-Security-Policy")  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json; charset=UTF-8")  # type: ignore[attr-defined]
        self.finish(json.dumps({"message": message}))  # type: ignore[attr-defined]


def safe_next(value: str) -> str | None:
    r"""``value`` if it is a path of this site to return to after signing in, else None.

    Browsers drop tabs and newlines from URLs and read ``\`` as ``/``, so ``/\t/host/``
    or ``/\host/`` would leave the site: any control character or backslash is refused,
    and what remains must be a path (no scheme, no host).
    """
    if not value.startswith("/") or value.startswith("//") or "\\" in value or any(
            ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path.startswith("/login"):
        return None
    return value


class PageHandler(_SecureHeaders, tornado.web.RequestHandler):
    """Renders one page shell.

    ``template``: the template file; its page module is ``static/js/<same name>.js``.
    ``page``: the navigation key. ``public``: shown without a session. A visit without the
    session cookie is redirected to ``/login?next=<path>``; a cookie whose token has expired
    is caught by the page's script on its first 401.
    """

    def initialize(self, template: str, page: str, public: bool = False) -> None:
        self.template = template
        self.page = page
        self.public = public

    def get_template_path(self) -> str:
        return str(TEMPLATE_DIR)

    def get(self, ref: str | None = None) -> None:
        if not self.public and not self.get_cookie(TOKEN_COOKIE):
            self.redirect("/login?" + urlencode({"next": self.request.uri}))
            return
        given = self.get_query_argument("next", None)
        if self.page == "login" and given is not None and safe_next(given) is None:
            self.redirect("/login")  # never carry an off-site target into the form
            return
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("Cache-Control", "no-store")
        script = self.template.rsplit(".", 1)[0] + ".js"
        links = [(label, url) for label, get in self.settings.get("nav_links", ())
                 if (url := get())]
        self.render(self.template, page=self.page, ref=ref or "", script=script, asset=asset_url,
                    nav_links=links)

    def head(self, ref: str | None = None) -> None:
        self.get(ref)


class AssetHandler(_SecureHeaders, tornado.web.StaticFileHandler):
    """Static files; versioned URLs (``?v=``) are cached for long, the rest revalidated.

    A path with a control character (``/assets/%00``) names no asset: 404, before the file
    system is asked (which raises on a NUL byte)."""

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if any(ord(c) < 0x20 or ord(c) == 0x7f for c in absolute_path):
            raise tornado.web.HTTPError(404, "no such asset")
        return super().validate_absolute_path(root, absolute_path)

    def set_extra_headers(self, path: str) -> None:
        if not self.get_query_argument("v", None):
            self.set_header("Cache-Control", "no-cache")


def states_module() -> str:
    """``/assets/js/states.js``: the job states the pages need, written from
    :mod:`everest_app.states` (the one table), so the JavaScript never re-declares them."""
    def js_set(states: frozenset[Any]) -> str:
        return f"new Set({json.dumps(sorted(s.value for s in states))})"

    return ("// Generated by the server from everest_app/states.py: do not copy these lists.\n"
            f"export const TERMINAL_STATES = {js_set(TERMINAL_STATES)};\n"
            f"export const QUEUED_STATES = {js_set(QUEUED_STATES)};\n")


class StatesModuleHandler(_SecureHeaders, tornado.web.RequestHandler):
    """Serves :func:`states_module` (an ES module)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(states_module())


def routes() -> list[Any]:
    """The tornado URL specs of the web UI, to be added after the API routes."""
    url = tornado.web.url
    return [
        url(r"/", tornado.web.RedirectHandler, {"url": "/apps", "permanent": False}),
        url(r"/login/?", PageHandler, {"template": "login.html", "page": "login",
                                       "public": True}),
        url(r"/signin/?", PageHandler, {"template": "signin.html", "page": "login",
                                        "public": True}),
        url(r"/apps/?", PageHandler, {"template": "apps.html", "page": "apps"}),
        url(r"/apps/(.+)", PageHandler, {"template": "app.html", "page": "apps"}),
        url(r"/jobs/?", PageHandler, {"template": "jobs.html", "page": "jobs"}),
        url(r"/resources/?", PageHandler, {"template": "resources.html",
                                           "page": "resources"}),
        url(r"/jobs/([^/]+)/?", PageHandler, {"template": "job.html", "page": "jobs"}),
        url(r"/assets/js/states\.js", StatesModuleHandler),
        url(r"/assets/(.*)", AssetHandler, {"path": str(STATIC_DIR)}),
    ]
