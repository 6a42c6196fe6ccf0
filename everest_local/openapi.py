"""The OpenAPI 3.0 description of the local server's REST API, served at
``/api/openapi.json``.

It is what the API promises, written once: paths, parameters, bodies, and the answers
including every error status (each error is ``{"message"}``). The test suite runs
schemathesis over it (``tests/server/test_openapi.py``), which sends thousands of generated
requests, valid and not, and requires that none gets a 5xx.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "400": "bad request: the message names the problem",
    "401": "missing, expired or revoked token",
    "403": "not allowed (cross-site, or a task token where one is not enough)",
    "404": "no such thing, or not the caller's",
    "405": "method not allowed",
    "429": "a limit was reached; Retry-After says when to retry",
    "507": "the server's disk is full; nothing was stored",
}


def _answers(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    out = dict(ok)
    for code in errors:
        out[code] = {"description": _ERRORS[code],
                     "content": {"application/json": {"schema": _ERROR}}}
    return out


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


_AUTH_ERRORS = ("401", "403", "405", "429", "507")
_JOB = {"$ref": "#/components/schemas/Job"}


def document(server_url: str = "") -> dict[str, Any]:
    """The OpenAPI document; ``server_url`` fills ``servers`` when given."""
    public: list[dict[str, Any]] = []
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Everest-compatible local server", "version": "1",
                 "description": "Everest's REST API as the everest-jupyter local server "
                                "implements it. Every error is {\"message\": ...}."},
        "security": [{"bearer": []}],
        "paths": {
            "/api/auth/access_token": {
                "post": {"summary": "sign in: a token (also set as the access_token cookie)",
                         "security": public,
                         "requestBody": _body({
                             "type": "object", "required": ["username", "password"],
                             "properties": {
                                 "username": {"type": "string"},
                                 "password": {"type": "string"},
                                 "label": {"type": "string", "maxLength": 200},
                                 "lifetime": {"type": "integer", "minimum": 1,
                                              "maximum": 5 * 365 * 24 * 3600}}}),
                         "responses": _answers(
                             {"200": _json({"type": "object", "required": ["access_token"],
                                            "properties": {
                                                "access_token": {"type": "string"}}})},
                             "400", "401", "403", "429", "507")},
                "get": {"summary": "who the token belongs to",
                        "responses": _answers({"200": _json({"type": "object"})},
                                              *_AUTH_ERRORS)},
                "delete": {"summary": "revoke the token",
                           "responses": _answers({"200": _json({"type": "object"})},
                                                 *_AUTH_ERRORS)},
            },
            "/api/apps": {
                "get": {"summary": "applications",
                        "responses": _answers({"200": _json({"type": "array"})},
                                              *_AUTH_ERRORS)}},
            "/api/apps/search": {
                "get": {"summary": "applications by name",
                        "parameters": [
                            {"name": "name", "in": "query", "schema": {"type": "string"}},
                            {"name": "pagenum", "in": "query",
                             "schema": {"type": "integer", "minimum": 1}},
                            {"name": "pagesize", "in": "query",
                             "schema": {"type": "integer", "minimum": 1}},
                            {"name": "sortBy", "in": "query",
                             "schema": {"type": "string", "enum": ["name", "jobs"]}}],
                        "responses": _answers({"200": _json({"type": "array"})}, "400",
                                              *_AUTH_ERRORS)}},
            "/api/apps/{app}": {
                "parameters": [_id("app", "an application id or alias")],
                "get": {"summary": "an application's description",
                        "responses": _answers({"200": _json({"type": "object"})}, "404",
                                              *_AUTH_ERRORS)},
                "post": {"summary": "submit a job",
                         "requestBody": _body({
                             "type": "object",
                             "properties": {
                                 "name": {"type": "string"},
                                 "inputs": {"type": "object"},
                                 "resources": {"type": "array",
                                               "items": {"type": "string"}}}}),
                         "responses": _answers({"201": _json(_JOB, "the new job")}, "400",
                                               "404", *_AUTH_ERRORS)}},
            "/api/resources": {
                "get": {"summary": "resources the caller may use",
                        "parameters": [{"name": "app", "in": "query",
                                        "schema": {"type": "string"}}],
                        "responses": _answers({"200": _json({"type": "array"})}, "404",
                                              *_AUTH_ERRORS)}},
            "/api/resources/{resource}": {
                "parameters": [_id("resource", "a resource id or name")],
                "get": {"summary": "one resource",
                        "responses": _answers({"200": _json({"type": "object"})}, "404",
                                              *_AUTH_ERRORS)}},
            "/api/jobs": {
                "get": {"summary": "the caller's jobs, newest first",
                        "responses": _answers({"200": _json({"type": "array",
                                                             "items": _JOB})},
                                              *_AUTH_ERRORS)},
                "delete": {"summary": "delete the caller's jobs of a name",
                           "parameters": [{"name": "name", "in": "query", "required": True,
                                           "schema": {"type": "string"}}],
                           "responses": _answers({"200": _json({"type": "object"})}, "400",
                                                 *_AUTH_ERRORS)}},
            "/api/jobs/{job}": {
                "parameters": [_id("job", "a job id")],
                "get": {"summary": "a job",
                        "responses": _answers({"200": _json(_JOB)}, "404", *_AUTH_ERRORS)},
                "delete": {"summary": "delete a job, its log and files",
                           "responses": _answers({"200": _json({"type": "object"})}, "404",
                                                 *_AUTH_ERRORS)}},
            "/api/jobs/{job}/cancel": {
                "parameters": [_id("job", "a job id")],
                "post": {"summary": "cancel a job",
                         "responses": _answers({"200": _json(_JOB)}, "404", *_AUTH_ERRORS)}},
            "/api/jobs/{job}/log": {
                "parameters": [_id("job", "a job id")],
                "get": {"summary": "a job's log",
                        "responses": _answers({"200": {"description": "the log",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}}},
                                              "404", *_AUTH_ERRORS)}},
            "/api/files/temp": {
                "post": {"summary": "upload a file (multipart, the first file part)",
                         "requestBody": {"required": True, "content": {
                             "multipart/form-data": {"schema": {
                                 "type": "object", "required": ["file"],
                                 "properties": {"file": {"type": "string",
                                                         "format": "binary"}}}}}},
                         "responses": _answers(
                             {"200": _json({"type": "object", "required": ["uri"],
                                            "properties": {"uri": {"type": "string"}}})},
                             "400", *_AUTH_ERRORS)}},
            "/api/files/temp/{folder}/{name}": {
                "parameters": [_id("folder", "the upload's folder"),
                               _id("name", "the file name")],
                "get": {"summary": "download one of the caller's files",
                        "responses": _answers({"200": {"description": "the bytes"}}, "404",
                                              *_AUTH_ERRORS)},
                "delete": {"summary": "delete one of the caller's files",
                           "responses": _answers({"200": _json({"type": "object"})}, "404",
                                                 *_AUTH_ERRORS)}},
            "/api/user/tmp_files": {
                "delete": {"summary": "delete all of the caller's uploads",
                           "responses": _answers({"200": _json({"type": "object"})},
                                                 *_AUTH_ERRORS)}},
            "/_local/stats": {
                "get": {"summary": "request counts per route", "security": public,
                        "responses": _answers({"200": _json({"type": "object"})}, "405")}},
        },
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
