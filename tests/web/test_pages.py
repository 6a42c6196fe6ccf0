"""The page shells and assets over plain HTTP: escaping of the id in the URL, no way out of
the assets folder, cache headers."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlsplit

from everest_app.states import QUEUED_STATES, TERMINAL_STATES
from everest_local.web.pages import STATIC_DIR
from tests.harness.server import ServerProcess
from tests.web.server_requests import cookie_session, login_token


def raw_get(server: ServerProcess, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..``)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_id_in_the_url_is_escaped_in_the_page(web_server: ServerProcess) -> None:
    session = cookie_session(web_server, login_token(web_server))
    resp = session.get(web_server.url + "/jobs/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                       timeout=10)
    assert resp.status_code == 200
    assert "<script>alert(1)" not in resp.text
    assert 'data-job="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in resp.text


def test_assets_stay_inside_their_folder(web_server: ServerProcess) -> None:
    status, body = raw_get(web_server, "/assets/js/api.js")
    assert status == 200 and b"export async function api" in body
    for path in ("/assets/../pages.py", "/assets/%2e%2e/pages.py", "/assets/..%2f__init__.py",
                 "/assets/%2e%2e/%2e%2e/handlers.py"):
        status, body = raw_get(web_server, path)
        assert status in (403, 404), path
        assert b"import" not in body, path


def test_versioned_assets_are_cached_and_others_revalidated(web_server: ServerProcess) -> None:
    session = cookie_session(web_server, login_token(web_server))
    page = session.get(web_server.url + "/apps", timeout=10).text
    versioned = re.search(r'src="(/assets/js/apps\.js\?v=[0-9a-f]+)"', page)
    assert versioned, page
    long_lived = session.get(web_server.url + versioned.group(1), timeout=10)
    assert long_lived.status_code == 200
    assert "max-age" in long_lived.headers["Cache-Control"]
    plain = session.get(web_server.url + "/assets/js/dom.js", timeout=10)
    assert plain.headers["Cache-Control"] == "no-cache"
    assert plain.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))


ODD_PATHS = ("/assets/%00", "/assets/js/%00.js", "/assets/%ff", "/assets/", "/assets/js",
             "/assets/%2e%2e/", "/jobs/%ff", "/apps/%c0%af", "/%00", "/api/%00",
             "/api/jobs/%00", "/api/files/%00", "/api/apps/%ff%fe")


def test_odd_paths_answer_4xx_json_never_500(web_server: ServerProcess) -> None:
    for path in ODD_PATHS:
        status, body = raw_get(web_server, path)
        assert 400 <= status < 500, (path, status, body)
        assert json.loads(body)["message"], path


def test_the_pages_read_job_states_from_the_servers_table(web_server: ServerProcess) -> None:
    # the one source: a module the server writes from everest_app.states, which ui.js
    # re-exports; no page script spells a state list of its own
    status, body = raw_get(web_server, "/assets/js/states.js")
    assert status == 200
    declared = dict(re.findall(r"export const (\w+) = new Set\((\[[^\]]*\])\);",
                               body.decode()))
    assert set(json.loads(declared["TERMINAL_STATES"])) == {s.value for s in TERMINAL_STATES}
    assert set(json.loads(declared["QUEUED_STATES"])) == {s.value for s in QUEUED_STATES}
    for script in STATIC_DIR.glob("js/*.js"):
        text = script.read_text()
        assert not re.search(r"new Set\(\[\s*\"(DONE|FAILED|CANCELLED|READY)\"", text), script
