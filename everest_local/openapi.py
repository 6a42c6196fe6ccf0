"""Routes declared once: each REST route's path, handler and OpenAPI description together.

A handler class is registered with its path template by :class:`RouteTable` (``@ROUTES(
"/api/jobs/{job}", job=Param("a job id"))``) and each of its HTTP methods carries its
description (``@operation("a job", ok=json_answer(JOB))``). From those declarations alone
come the server's URL table (:meth:`RouteTable.urls`), the OpenAPI 3.0 document served at
``/api/openapi.json`` (:meth:`RouteTable.document`) and the route names the request counters
use. Registering a handler whose method has no description is an error at import time, so
a route cannot be served and left out of the description.

The document is what the API promises: paths, parameters, bodies, and the answers including
every error status (each error is ``{"message"}``). The test suite runs schemathesis over it
(``tests/server/test_openapi.py``), which sends thousands of generated requests, valid and
not, and requires that none gets a 5xx.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

_ERROR = {"$ref": "#/components/schemas/Error"}
ERRORS = {
    "400": "bad request: the message names the problem",
    "401": "missing, expired or revoked token, or wrong credentials",
    "403": "not allowed (cross-site, or a task token where one is not enough)",
    "404": "no such thing, or not the caller's",
    "405": "method not allowed",
    "429": "a limit was reached; Retry-After says when to retry",
    "507": "the server's disk is full; nothing was stored",
}
"""Every error status an operation may declare, with what it means."""

AUTH_ERRORS = ("401", "403", "405", "429", "507")
"""The errors any operation that needs a token may answer."""

JOB = {"$ref": "#/components/schemas/Job"}
OBJECT = {"type": "object"}
ARRAY = {"type": "array"}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def json_answer(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """A JSON answer's description."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """A JSON request body's description."""
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    """A query parameter's description."""
    out: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
    if required:
        out["required"] = True
    return out


@dataclass(frozen=True)
class Param:
    """A path parameter: what it is, and the regular expression its segment matches."""

    description: str
    pattern: str = "[^/]+"


@dataclass(frozen=True)
class Operation:
    """One method of a route, as the OpenAPI document describes it."""

    summary: str
    ok: dict[str, Any]
    errors: tuple[str, ...]
    public: bool = False
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        responses = dict(self.ok)
        for code in self.errors:
            responses[code] = {"description": ERRORS[code],
                               "content": {"application/json": {"schema": _ERROR}}}
        out: dict[str, Any] = {"summary": self.summary, "responses": responses}
        if self.public:
            out["security"] = []
        if self.parameters:
            out["parameters"] = list(self.parameters)
        if self.body is not None:
            out["requestBody"] = self.body
        return out


F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


def operation(summary: str, *, ok: dict[str, Any], errors: tuple[str, ...] = (),
              public: bool = False, parameters: tuple[dict[str, Any], ...] = (),
              body: dict[str, Any] | None = None) -> Callable[[F], F]:
    """Describe the HTTP method it decorates. ``ok``: ``{status: response}`` (see
    :func:`json_answer`); ``errors``: the error
    statuses it may answer (:data:`AUTH_ERRORS` are added unless ``public``); ``public``:
    no token needed."""
    if not public:
        errors = (*errors, *(e for e in AUTH_ERRORS if e not in errors))
    elif "405" not in errors:
        errors = (*errors, "405")
    described = Operation(summary, ok, tuple(sorted(set(errors))), public, parameters, body)

    def mark(fn: F) -> F:
        fn.__operation__ = described  # type: ignore[attr-defined]
        return fn

    return mark


@functools.cache
def operations_of(cls: type) -> dict[str, Operation]:
    """The described methods of a handler class, by lower-case HTTP method."""
    out = {}
    for method in HTTP_METHODS:
        described = getattr(getattr(cls, method, None), "__operation__", None)
        if described is not None:
            out[method] = described
    return out


@dataclass(frozen=True)
class Route:
    """A path template (``/api/jobs/{job}``), its parameters, and other paths it answers
    on (``aliases``: older clients' spellings, described too)."""

    path: str
    params: dict[str, Param] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def regex(self, path: str | None = None) -> str:
        """The tornado pattern of ``path`` (default: the route's own): a group per
        parameter, in order."""
        out, pos = "", 0
        template = path or self.path
        for m in re.finditer(r"\{(\w+)\}", template):
            out += re.escape(template[pos:m.start()]) + f"({self.params[m.group(1)].pattern})"
            pos = m.end()
        return out + re.escape(template[pos:])


class RouteTable:
    """The API's routes in declaration order (tornado takes the first that matches, so a
    literal path such as ``/api/apps/search`` is declared before ``/api/apps/{app}``)."""

    def __init__(self) -> None:
        self.entries: list[tuple[Route, type]] = []

    def __call__(self, path: str, *, aliases: tuple[str, ...] = (),
                 **params: Param) -> Callable[[C], C]:
        """Class decorator: serve the handler at ``path``; sets its ``route`` (the name
        request counters use) to ``path``."""
        route = Route(path, params, aliases)
        named = set(re.findall(r"\{(\w+)\}", path))
        if named != set(params):
            raise ValueError(f"{path}: parameters {sorted(named)} need a Param each, "
                             f"got {sorted(params)}")

        def register(cls: C) -> C:
            undescribed = [m for m in HTTP_METHODS
                           if m in cls.__dict__ and m not in operations_of(cls)]
            if undescribed:
                raise TypeError(f"{cls.__name__}: describe {', '.join(undescribed)} with "
                                "@operation (the OpenAPI document is made from it)")
            if not operations_of(cls):
                raise TypeError(f"{cls.__name__}: no described method")
            cls.route = path  # type: ignore[attr-defined]
            self.entries.append((route, cls))
            return cls

        return register

    def urls(self, args: dict[str, Any]) -> list[tuple[str, type, dict[str, Any]]]:
        """The tornado URL table: ``(pattern, handler, args)``, aliases included."""
        return [(route.regex(path), cls, args) for route, cls in self.entries
                for path in (route.path, *route.aliases)]

    def document(self, server_url: str = "") -> dict[str, Any]:
        """The OpenAPI document; ``server_url`` fills ``servers`` when given."""
        paths: dict[str, Any] = {}
        for route, cls in self.entries:
            item: dict[str, Any] = {}
            if route.params:
                item["parameters"] = [
                    {"name": name, "in": "path", "required": True,
                     "description": param.description,
                     "schema": {"type": "string", "minLength": 1}}
                    for name, param in route.params.items()]
            for method, described in operations_of(cls).items():
                item[method] = described.describe()
            for path in (route.path, *route.aliases):
                paths[path] = item
        doc: dict[str, Any] = {
            "openapi": "3.0.3",
            "info": {"title": "Everest-compatible local server", "version": "1",
                     "description": "Everest's REST API as the everest-jupyter local server "
                                    "implements it. Every error is {\"message\": ...}."},
            "security": [{"bearer": []}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {
                    "Error": {"type": "object", "required": ["message"],
                              "properties": {"message": {"type": "string"}}},
                    "Job": {"type": "object", "required": ["id", "name", "state", "inputs"],
                            "properties": {
                                "id": {"type": "string"}, "name": {"type": "string"},
                                "state": {"type": "string"}, "inputs": {"type": "object"},
                                "appId": {"type": "string"}, "result": {"nullable": True},
                                "info": {"type": "string", "nullable": True}}},
                },
            },
        }
        if server_url:
            doc["servers"] = [{"url": server_url}]
        return doc
