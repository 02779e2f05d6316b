"""The OpenAPI 3 document of the ``/api/`` routes (CONTRACT §5), served at
``/api/openapi.json``. A test checks it lists exactly the routes that exist."""

from __future__ import annotations

from typing import Any

from camproxy.hub.source import Limits

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid JSON or an invalid command",
        401: "No valid session or token",
        403: "Not allowed: a view-only token, a user without control permission, or a "
        "missing X-CSRF-Token header with a session",
        503: "The camera is not connected",
    }
    return {
        str(code): {
            "description": text[code],
            "content": {"application/json": {"schema": ERROR}},
        }
        for code in codes
    }


def _command(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}, {"session": [], "csrf": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            },
            "responses": {
                "200": {
                    "description": "Sent to the camera",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Ok"}}
                    },
                },
                **_errors(400, 401, 403, 503),
            },
        }
    }


def openapi_document(limits: Limits) -> dict[str, Any]:
    """The document for the camera's current limits, so valid positions are exact."""
    integer = {"type": "integer"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CamProxy API",
            "version": "1",
            "description": "Status and control of the camera behind CamProxy. Authenticate "
            "with `Authorization: Bearer TOKEN` (tokens from `camproxy token add`; a "
            "`control` token for the POST routes) or a browser session plus the "
            "`X-CSRF-Token` header.",
        },
        "paths": {
            "/api/status": {
                "get": {
                    "summary": "Camera and proxy state",
                    "security": [{"bearer": []}, {"session": []}],
                    "responses": {
                        "200": {
                            "description": "Current state",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/api/servo": _command(
                "Move the camera one step, or back to the start position",
                {
                    "type": "object",
                    "required": ["command"],
                    "properties": {
                        "command": {
                            "type": "string",
                            "enum": ["up", "down", "left", "right", "center"],
                        }
                    },
                },
            ),
            "/api/position": _command(
                "Move the camera to a position within its limits",
                {
                    "type": "object",
                    "required": ["x", "y"],
                    "properties": {
                        "x": {"type": "integer", "minimum": limits.min_x, "maximum": limits.max_x},
                        "y": {"type": "integer", "minimum": limits.min_y, "maximum": limits.max_y},
                    },
                },
            ),
            "/api/light": _command(
                "Switch the light",
                {
                    "type": "object",
                    "required": ["state"],
                    "properties": {"state": {"type": "boolean"}},
                },
            ),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "camproxy_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Ok": {
                    "type": "object",
                    "required": ["ok"],
                    "properties": {"ok": {"type": "boolean"}},
                },
                "Status": {
                    "type": "object",
                    "required": ["esp32_connected", "clients", "position", "light", "limits"],
                    "properties": {
                        "esp32_connected": {"type": "boolean"},
                        "clients": integer,
                        "position": {
                            "type": "object",
                            "nullable": True,
                            "properties": {"x": integer, "y": integer},
                        },
                        "light": {"type": "boolean"},
                        "limits": {
                            "type": "object",
                            "properties": {
                                "min_x": integer,
                                "max_x": integer,
                                "min_y": integer,
                                "max_y": integer,
                            },
                        },
                    },
                },
            },
        },
    }
