"""The OpenAPI description at /api/openapi.json, and schemathesis over it: thousands of
generated requests (valid and not, with and without a token) against a real server, and
not one may get a 5xx. Each answer must also be what the description declares (status and
JSON). The count and the time taken are printed at the end of the module's run."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import requests
import schemathesis
import tornado.web
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from everest_local import openapi
from everest_local.handlers import ROUTES
from tests.harness.server import ServerProcess, password_for

EXAMPLES = 60  # per operation, generation mode and auth mode: about 5,000 requests
TALLY: Counter[str] = Counter()
TIMES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzzed(real_components: None,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Generated sign-ins with wrong passwords all come from 127.0.0.1 and make that address
    # wait (sign-in backoff); a short longest wait keeps the fuzzer's own re-sign-in quick.
    proc = ServerProcess(tmp_path_factory.mktemp("fuzzed") / "data",
                         users=("fuzzer", "alice"), extra_args=["--login-backoff-max", "1",
                                                 # a generated wait= holds 0.05 s at most
                                                 "--max-wait", "0.05"])
    started = time.monotonic()
    try:
        yield proc.start()
    finally:
        proc.close()
        print(f"\nschemathesis: {TALLY['requests']} requests, {TALLY['5xx']} answers 5xx, "
              f"{time.monotonic() - started:.1f} s")
        slowest = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in
                            TIMES.most_common(5))
        print(f"slowest operations: {slowest}")


def test_the_description_is_served_without_a_token(fuzzed: ServerProcess) -> None:
    doc = requests.get(fuzzed.url + "/api/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.") and doc["servers"] == [{"url": fuzzed.url}]
    assert "/api/jobs/{job}" in doc["paths"]


def test_every_route_the_server_serves_is_described(fuzzed: ServerProcess) -> None:
    # the URL table and the description come from the same declarations: each pattern the
    # server routes is a described path, each implemented method a described operation
    doc = requests.get(fuzzed.url + "/api/openapi.json", timeout=10).json()
    table = ROUTES.urls({})
    reached = set()
    for path, item in doc["paths"].items():
        # the handler tornado picks for this path: the first pattern that matches
        pattern, handler, _ = next(r for r in table if re.fullmatch(r[0], _sample(path)))
        reached.add(pattern)
        implemented = {m for m in ("get", "post", "delete")
                       if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)}
        assert implemented == set(item) - {"parameters"}, path
    assert reached == {pattern for pattern, _, _ in table}
    for path in ("/api/auth/signin", "/api/auth/signin_link", "/api/auth/access_token",
                 "/auth/access_token", "/api/openapi.json"):
        assert path in doc["paths"], path
    assert doc["paths"]["/api/auth/signin"]["post"]["security"] == []


def _sample(path: str) -> str:
    return re.sub(r"\{\w+\}", "x", path)


class _Token:
    """The fuzzer's token, minted again when a generated request revoked it."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.value = self._mint()

    def _mint(self) -> str:
        """Sign in as a client does: waiting as long as a 429's Retry-After asks."""
        for _ in range(10):
            resp = requests.post(self.server.url + "/api/auth/access_token", timeout=30,
                                 json={"username": "fuzzer", "password": password_for("fuzzer")})
            if resp.status_code != 429:
                break
            time.sleep(float(resp.headers.get("Retry-After", 1)))
        resp.raise_for_status()
        return resp.json()["access_token"]

    def after(self, case, resp) -> None:
        if case.method == "DELETE" and case.path in ("/api/auth/access_token",
                                                      "/auth/access_token") \
                and resp.status_code == 200:
            self.value = self._mint()


@pytest.fixture(scope="module")
def token(fuzzed: ServerProcess) -> _Token:
    return _Token(fuzzed)


def _check(case, headers: dict[str, str], token: _Token | None = None) -> None:
    resp = case.call(headers=headers, timeout=30)
    if token is not None:
        token.after(case, resp)
    TALLY["requests"] += 1
    if resp.status_code >= 500:
        TALLY["5xx"] += 1
    assert resp.status_code < 500, (case.method, case.path, resp.status_code, resp.text)
    declared = case.operation.definition.raw.get("responses", {})
    assert str(resp.status_code) in declared, (case.method, case.path, resp.status_code,
                                               resp.text)
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        resp.json()  # strict JSON out: it parses


_FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck), database=None)


def _fuzz(server: ServerProcess, headers: Callable[[], dict[str, str]],
          token: _Token | None = None) -> None:
    """Every operation of the description, valid and invalid generated requests."""
    described = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    operations = [result.ok() for result in described.get_all_operations()]
    assert len(operations) >= 20
    labels = {operation.label for operation in operations}
    assert {"POST /api/auth/signin", "POST /api/auth/signin_link",
            "POST /auth/access_token"} <= labels  # the sign-in routes are fuzzed too
    for operation in operations:
        for mode in GenerationMode:
            @_FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                _check(case, headers(), token)

            started = time.monotonic()
            try:
                run()
            except Unsatisfiable:  # nothing to vary: an operation without parameters
                assert mode is GenerationMode.NEGATIVE, operation.label
            TIMES[f"{operation.label} {mode.value}"] += time.monotonic() - started


def test_no_generated_request_with_a_token_gets_a_server_error(
        fuzzed: ServerProcess, token: _Token) -> None:
    _fuzz(fuzzed, lambda: {"Authorization": f"Bearer {token.value}"}, token)


def test_no_generated_request_without_one_gets_a_server_error(fuzzed: ServerProcess) -> None:
    _fuzz(fuzzed, dict)


def test_a_route_cannot_be_served_without_its_description() -> None:
    table = openapi.RouteTable()
    with pytest.raises(TypeError, match="describe post with @operation"):
        @table("/api/things")
        class Undescribed(tornado.web.RequestHandler):
            @openapi.operation("list things", ok={"200": openapi.json_answer({"type": "array"})})
            def get(self) -> None: ...

            def post(self) -> None: ...
    with pytest.raises(ValueError, match="need a Param each"):
        table("/api/things/{thing}")
    assert table.entries == []

    @table("/api/things/{thing}", thing=openapi.Param("a thing", pattern="[0-9]+"))
    class Thing(tornado.web.RequestHandler):
        @openapi.operation("a thing", ok={"200": openapi.json_answer({"type": "object"})},
                           errors=("404",))
        def get(self, thing: str) -> None: ...

    assert table.urls({}) == [(r"/api/things/([0-9]+)", Thing, {})]
    described = table.document()["paths"]["/api/things/{thing}"]
    assert sorted(described["get"]["responses"]) == ["200", "401", "403", "404", "405",
                                                     "429", "507"]
