"""The relay's OpenAPI description (``GET /api/openapi.json``): its workspace API, and the
session calls a client makes. Written out here, next to the handlers it describes
(:mod:`launcher.relay.workspace_api`, :mod:`launcher.relay.api`); ``tests/relay`` checks
that each described path answers as described."""

from __future__ import annotations

from typing import Any

from everest_app import __version__

_ERROR = {"description": "refused", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the workspace's name, percent-encoded as one segment ('a/b' is "
                        "'a%2Fb')"}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _ERROR for code in codes}


def description() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    workspace_props = {
        "name": {"type": "string"}, "bytes": {"type": "integer"},
        "files": {"type": "integer"},
        "last_saved": {"type": "number", "nullable": True,
                       "description": "epoch seconds of the last save"},
        "last_session": {"type": "string", "nullable": True},
        "live_session": {"type": "string", "nullable": True,
                         "description": "the live session writing it now"}}
    snapshot_props = {
        "id": {"type": "string"}, "time": {"type": "number"},
        "session_id": {"type": "string", "nullable": True,
                       "description": "the session whose end cut it (null: an upload)"},
        "resource": {"type": "string", "nullable": True},
        "files": {"type": "integer"}, "bytes": {"type": "integer"},
        "saved": {"type": "boolean",
                  "description": "false: the session ended without its final save"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "everest-jupyter relay", "version": __version__,
                 "description": "Sessions and workspaces. Authenticate with an Everest token "
                                "(Authorization: Bearer). Errors are {\"message\"}."},
        "components": {
            "securitySchemes": {"everest": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["message"],
                          "properties": {"message": {"type": "string"}}},
                "Workspace": {"type": "object", "properties": workspace_props,
                              "required": list(workspace_props)},
                "Snapshot": {"type": "object", "properties": snapshot_props,
                             "required": list(snapshot_props)},
                "WorkspaceList": {"type": "object", "required": ["workspaces", "usage"],
                                  "properties": {
                                      "workspaces": {"type": "array", "items": {
                                          "$ref": "#/components/schemas/Workspace"}},
                                      "usage": {"type": "integer"},
                                      "quota": {"type": "integer", "nullable": True}}},
                "WorkspaceHistory": {"allOf": [
                    {"$ref": "#/components/schemas/Workspace"},
                    {"type": "object", "required": ["snapshots"], "properties": {
                        "snapshots": {"type": "array", "items": {
                            "$ref": "#/components/schemas/Snapshot"}}}}]},
            }},
        "security": [{"everest": []}],
        "paths": {
            "/api/workspaces": {"get": {
                "summary": "your workspaces, the bytes they take and your quota",
                "responses": {"200": _json("WorkspaceList", "the list"), **_errors(401)}}},
            "/api/workspaces/{name}": {
                "parameters": [_NAME],
                "get": {"summary": "a workspace and its history (snapshots, newest first)",
                        "responses": {"200": _json("WorkspaceHistory", "the workspace"),
                                      **_errors(400, 401, 404)}},
                "put": {"summary": "replace the workspace's files with a zip's (history kept)",
                        "requestBody": {"required": True, "content": {"application/zip": {
                            "schema": {"type": "string", "format": "binary"}}}},
                        "responses": {"201": _json("Snapshot", "the snapshot it made"),
                                      **_errors(400, 401, 409, 413)}},
                "delete": {"summary": "remove the workspace and its history",
                           "responses": {"200": {"description": "deleted"},
                                         **_errors(400, 401, 404, 409)}}},
            "/api/workspaces/{name}/zip": {
                "parameters": [_NAME, {"name": "snapshot", "in": "query", "required": False,
                                       "schema": {"type": "string"},
                                       "description": "a snapshot id (default: the latest)"}],
                "get": {"summary": "download the workspace as a zip",
                        "responses": {"200": {"description": "the zip", "content": {
                            "application/zip": {"schema": {"type": "string",
                                                           "format": "binary"}}}},
                                      **_errors(400, 401, 404)}}},
            "/api/workspaces/{name}/files": {
                "parameters": [_NAME],
                "post": {"summary": "replace the workspace's files with these (each part's "
                                    "file name is its path inside)",
                         "requestBody": {"required": True, "content": {
                             "multipart/form-data": {"schema": {
                                 "type": "object", "additionalProperties": {
                                     "type": "string", "format": "binary"}}}}},
                         "responses": {"201": _json("Snapshot", "the snapshot it made"),
                                       **_errors(400, 401, 409, 413)}}},
            "/api/sessions": {"get": {
                "summary": "your live sessions (with their workspace and time left)",
                "responses": {"200": {"description": "the sessions"}, **_errors(401)}}},
        },
    }
