"""The relay's route table: every URL it serves, and the handler behind it."""

from __future__ import annotations

import re

from tornado import web

from launcher.relay import websocket as relay_websocket
from launcher.relay import workspace_api
from launcher.relay.api import (
    _SID,
    InfoHandler,
    LoginHandler,
    LogoutHandler,
    NotFoundHandler,
    OpenApiHandler,
    PageHandler,
    RedeemHandler,
    RunnerAnsweringHandler,
    RunnerDeadlinesHandler,
    RunnerEndedHandler,
    SessionHandler,
    SessionsHandler,
)
from launcher.relay.proxy import (
    SESSION_PATH,
    TIME_LEFT_PATH,
    HubProxyHandler,
    SessionProxyHandler,
    TimeLeftHandler,
)


def make_app(relay) -> web.Application:
    """The tornado application serving ``relay`` (a :class:`launcher.relay.service.Relay`).
    With ``session_host``, a session's own host (``<id>.<session_host>``) serves that
    session and nothing else: no API, no page."""
    app = web.Application([
        (r"/", PageHandler),
        (r"/api/relay", InfoHandler),
        (r"/api/login", LoginHandler),
        (r"/api/logout", LogoutHandler),
        (r"/api/sessions", SessionsHandler),
        (rf"/api/sessions/{_SID}", SessionHandler),
        (rf"/api/sessions/{_SID}/ended", RunnerEndedHandler),
        (rf"/api/sessions/{_SID}/deadlines", RunnerDeadlinesHandler),
        (rf"/api/sessions/{_SID}/answering", RunnerAnsweringHandler),
        (r"/api/tickets/redeem", RedeemHandler),
        (r"/api/openapi.json", OpenApiHandler),
        *workspace_api.routes(),
        (relay_websocket.PATH, relay_websocket.TunnelHandler,
         {"entrance": relay.websocket_entrance}),
        (TIME_LEFT_PATH, TimeLeftHandler),
        (SESSION_PATH, SessionProxyHandler),
        (r"/(?!api/).*", HubProxyHandler),
    ], default_handler_class=NotFoundHandler, relay=relay, xsrf_cookies=False)
    if relay.config.session_host:
        host = re.escape(relay.config.session_host.lower().strip("."))
        app.add_handlers(rf"[0-9a-f]{{24}}\.{host}", [
            (TIME_LEFT_PATH, TimeLeftHandler),
            (SESSION_PATH, SessionProxyHandler),
            (r".*", NotFoundHandler),
        ])
    return app
