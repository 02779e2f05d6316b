"""The OpenAPI 3 document of the ``/api/`` routes (CONTRACT §5), served at
``/api/openapi.json``. A test checks it lists exactly the routes that exist."""

from __future__ import annotations

from typing import Any

from camproxy.accounts.cameras import CAMERA_NAME
from camproxy.hub.source import Limits

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid JSON, an invalid command, or one the camera's kind cannot do",
        401: "No valid session or token",
        403: "Not allowed: view access only (a view token, a user without control "
        "permission or grant), or a missing X-CSRF-Token header with a session",
        404: "No such camera (or one the caller may not see)",
        409: "Another user holds exclusive control of the camera",
        502: "The camera did not carry the command out (say, its light did not switch)",
        503: "The camera is not connected",
    }
    return {
        str(code): {
            "description": text[code],
            "content": {"application/json": {"schema": ERROR}},
        }
        for code in codes
    }


NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The camera's name",
    "schema": {"type": "string", "pattern": f"^{CAMERA_NAME.pattern}$"},
}


def _command(summary: str, schema: dict[str, Any], *, per_camera: bool = False) -> dict[str, Any]:
    errors = _errors(400, 401, 403, 404, 409, 502, 503)
    return {
        "post": {
            "summary": summary,
            **({"parameters": [NAME]} if per_camera else {}),
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
                **errors,
            },
        }
    }


def _status(summary: str, *, per_camera: bool = False) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            **({"parameters": [NAME]} if per_camera else {}),
            "security": [{"bearer": []}, {"session": []}],
            "responses": {
                "200": {
                    "description": "Current state",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}
                    },
                },
                **_errors(401, 404),
            },
        }
    }


SERVO = {
    "type": "object",
    "required": ["command"],
    "properties": {
        "command": {"type": "string", "enum": ["up", "down", "left", "right", "center"]}
    },
}
LIGHT = {"type": "object", "required": ["state"], "properties": {"state": {"type": "boolean"}}}


def openapi_document(limits: Limits) -> dict[str, Any]:
    """The document for the camera's current limits, so valid positions are exact."""
    integer = {"type": "integer"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CamProxy API",
            "version": "1",
            "description": "Status and control of the cameras behind CamProxy. Authenticate "
            "with `Authorization: Bearer TOKEN` (tokens from `camproxy token add`; a "
            "`control` token for the POST routes) or a browser session plus the "
            "`X-CSRF-Token` header.",
        },
        "paths": {
            "/api/status": _status("The camera default's state"),
            "/api/servo": _command(
                "Move the camera default one step, or back to its start position", SERVO
            ),
            "/api/position": _command(
                "Move the camera default to a position within its limits",
                {
                    "type": "object",
                    "required": ["x", "y"],
                    "properties": {
                        "x": {"type": "integer", "minimum": limits.min_x, "maximum": limits.max_x},
                        "y": {"type": "integer", "minimum": limits.min_y, "maximum": limits.max_y},
                    },
                },
            ),
            "/api/light": _command("Switch the camera default's light", LIGHT),
            "/api/cameras": {
                "get": {
                    "summary": "The cameras the caller may view",
                    "security": [{"bearer": []}, {"session": []}],
                    "responses": {
                        "200": {
                            "description": "One object per camera",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Camera"},
                                    }
                                }
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/api/cameras/{name}/status": _status("A camera's state", per_camera=True),
            "/api/cameras/{name}/servo": _command(
                "Move a camera one step, or back to its start position", SERVO, per_camera=True
            ),
            "/api/cameras/{name}/position": _command(
                "Move a camera to a position within its limits (see its status)",
                {
                    "type": "object",
                    "required": ["x", "y"],
                    "properties": {"x": integer, "y": integer},
                },
                per_camera=True,
            ),
            "/api/cameras/{name}/light": _command(
                "Switch a camera's light", LIGHT, per_camera=True
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
                "Camera": {
                    "type": "object",
                    "required": [
                        "name",
                        "title",
                        "kind",
                        "esp32_connected",
                        "clients",
                        "access",
                        "control",
                        "capabilities",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "title": {"type": "string"},
                        "kind": {"type": "string", "enum": ["robocam", "esp32", "mjpeg", "jpeg"]},
                        "esp32_connected": {"type": "boolean"},
                        "clients": integer,
                        "access": {"type": "string", "enum": ["view", "control"]},
                        "control": {"type": "string", "enum": ["shared", "exclusive"]},
                        "capabilities": {
                            "type": "object",
                            "properties": {
                                "pan_tilt": {"type": "boolean"},
                                "light": {"type": "boolean"},
                            },
                        },
                        "holder": {"type": "string", "nullable": True},
                    },
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
