"""CamProxy's configuration: command-line options over environment over ``.env``.

One immutable :class:`Config` is built here and handed down; nothing else reads the
environment.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
from dotenv import dotenv_values
from hyperlink import URL

from camproxy.accounts.location import BadDatabaseLocation, mask, parse_location
from camproxy.urls import redacted_url
from camproxy.web.origins import is_valid_origin
from camproxy.web.proxies import parse_networks

DEFAULT_PORT = "5000"
DEFAULT_CAMERA_URL = "ws://192.168.1.100:80/ws"
DEFAULT_DATABASE = "robocam.db"
DEFAULT_HOST = "0.0.0.0"  # noqa: S104 - a camera proxy serves its LAN by default
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting is invalid; the message is one line, fit for a user."""


def _masked(database: str) -> str:
    return repr(mask(database))


@attrs.frozen
class Config:
    """Every setting of one CamProxy daemon."""

    listen: str = f"tcp:{DEFAULT_PORT}:interface={DEFAULT_HOST}"
    camera_url: str = DEFAULT_CAMERA_URL
    #: Whether ``--camera`` (or ``ESP32CAM_*``) was given: it then makes ``default``.
    camera_given: bool = False
    #: A SQLite path (or ``:memory:``) or a ``postgresql://`` URL; see ``database_setting``.
    database: str = attrs.field(default=DEFAULT_DATABASE, repr=_masked)
    allowed_origins: tuple[str, ...] = ()
    max_fps: float = 10.0
    idle_close: float = 30.0
    demo: bool = False
    secret_key: str = attrs.field(default="", repr=False)
    admin_username: str | None = None
    admin_password: str | None = attrs.field(default=None, repr=False)
    log_level: str = "INFO"
    log_file: str | None = None
    camera_ca: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    metrics_allow: tuple[str, ...] = ()
    log_format: str = "text"
    frame_timeout: float = 2.0
    max_frame_bytes: int = 4 * 1024 * 1024
    #: Seconds for the camera's TCP connect plus WebSocket handshake.
    camera_connect_timeout: float = 5.0
    #: Seconds between pings on an idle camera link, and to wait for the pong.
    camera_ping_interval: float = 5.0
    #: The cluster's Redis (CONTRACT §8), or None for a daemon on its own.
    redis_url: str | None = attrs.field(default=None, repr=lambda url: repr(_redis_masked(url)))
    redis_ca: str | None = None
    #: This daemon's name in a cluster (logs, /health, metrics).
    node: str = ""


def _redis_masked(url: str | None) -> str | None:
    if url is None:
        return None
    from camproxy.cluster.redisurl import parse_redis_url

    try:
        return parse_redis_url(url).redacted()
    except ValueError:
        return "***"


def default_node_name(listen: str) -> str:
    """``HOST:PORT``: this machine's name and the port the daemon listens on."""
    parts = listen.split(":")
    port = next((part for part in parts[1:] if part.isdigit()), None)
    host = socket.gethostname()
    return f"{host}:{port}" if port else host


def read_environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment laid over ``.env`` of the working directory."""
    dotenv_file = (cwd or Path.cwd()) / ".env"
    merged = {k: v for k, v in dotenv_values(dotenv_file).items() if v is not None}
    merged.update(os.environ)
    return merged


def _number(name: str, text: str, *, minimum: float, maximum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}, not {text!r}")
    return value


def _escape_endpoint(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def camera_url_from_env(env: Mapping[str, str]) -> str | None:
    if not any(env.get(k) for k in ("ESP32CAM_IP", "ESP32CAM_PORT", "ESP32CAM_PATH")):
        return None
    host = env.get("ESP32CAM_IP") or "192.168.1.100"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = env.get("ESP32CAM_PORT") or "80"
    path = env.get("ESP32CAM_PATH") or "/ws"
    if not path.startswith("/"):
        path = "/" + path
    return f"ws://{host}:{port}{path}"


def check_camera_url(url: str) -> str:
    try:
        parsed = URL.from_text(url)
        port = parsed.port
    except (ValueError, TypeError):
        raise ConfigError(f"camera URL {redacted_url(url)!r} is not a valid URL") from None
    if parsed.scheme not in ("ws", "wss", "http", "https") or not parsed.host:
        raise ConfigError(
            f"camera URL {redacted_url(url)!r} must look like ws://HOST[:PORT]/PATH (RoboCam) "
            "or http(s)://HOST[:PORT][/PATH] (ESP32 web server, MJPEG or JPEG)"
        )
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"camera URL {redacted_url(url)!r} has an invalid port")
    return url


def database_setting(option: str | None, env: Mapping[str, str]) -> str:
    """The database to use: ``--database`` (a path or a URL), else ``DATABASE_URL``, else
    ``robocam.db``; as ``Config.database`` keeps it (a SQLite path, or a PostgreSQL URL).

    Raises :class:`ConfigError` with a one-line message (never showing a password).
    """
    try:
        if option is not None:
            return parse_location(option, source="--database").setting()
        if env.get("DATABASE_URL"):
            return parse_location(env["DATABASE_URL"], source="DATABASE_URL").setting()
    except BadDatabaseLocation as problem:
        raise ConfigError(str(problem)) from None
    return DEFAULT_DATABASE


def build_config(options: Mapping[str, object], env: Mapping[str, str]) -> Config:
    """Merge command-line ``options`` (None = not given) with ``env``; validate all.

    Raises :class:`ConfigError` with a one-line message on the first bad value.
    """

    def pick(option: str, variable: str | None) -> str | None:
        value = options.get(option)
        if value is not None:
            return str(value)
        if variable is not None and env.get(variable):
            return env[variable]
        return None

    demo = bool(options.get("demo")) or env.get("CAMPROXY_DEMO") == "1"
    listen = pick("listen", None)
    if listen is None:
        host = env.get("HOST") or DEFAULT_HOST
        port = env.get("PORT") or DEFAULT_PORT
        if not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"PORT must be a port number, not {port!r}")
        listen = f"tcp:{port}:interface={_escape_endpoint(host)}"

    camera_option = pick("camera", None) or camera_url_from_env(env)
    camera = camera_option or DEFAULT_CAMERA_URL
    check_camera_url(camera)

    database = database_setting(pick("database", None), env)

    origins: list[str] = list(_strings(options.get("allowed-origin")))
    if not origins and env.get("ALLOWED_ORIGINS"):
        origins = [o.strip() for o in env["ALLOWED_ORIGINS"].split(",") if o.strip()]
    for origin in origins:
        if not is_valid_origin(origin):
            raise ConfigError(f"allowed origin {origin!r} must look like https://host[:port]")

    max_fps = _number("max-fps", pick("max-fps", "MAX_FPS") or "10", minimum=0.1, maximum=120)
    idle_close = _number(
        "idle-close", pick("idle-close", "IDLE_CLOSE") or "30", minimum=0, maximum=86400 * 365
    )
    frame_timeout = _number(
        "frame-timeout", pick("frame-timeout", None) or "2", minimum=0.5, maximum=60
    )

    log_level = (env.get("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")

    secret_key = env.get("SECRET_KEY") or ""
    if not secret_key:
        if not demo:
            raise ConfigError(
                "SECRET_KEY is not set: put a long random value in the environment or .env "
                "(e.g. SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))'))"
            )
        secret_key = secrets.token_hex(32)

    def networks(option: str, variable: str) -> tuple[str, ...]:
        given = list(_strings(options.get(option)))
        if not given and env.get(variable):
            given = [n.strip() for n in env[variable].split(",") if n.strip()]
        try:
            parse_networks(given)
        except ValueError as problem:
            raise ConfigError(f"{option}: {problem}") from None
        return tuple(given)

    trusted_proxies = networks("trusted-proxy", "TRUSTED_PROXIES")
    metrics_allow = networks("metrics-allow", "METRICS_ALLOW")
    log_format = (pick("log-format", "LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"log format must be text or json, not {log_format!r}")

    camera_ca = pick("camera-ca", "CAMERA_CA_FILE")
    if camera_ca is not None and not Path(camera_ca).is_file():
        raise ConfigError(f"camera CA file {camera_ca!r} does not exist")

    redis_url = pick("redis", "REDIS_URL")
    redis_ca = pick("redis-ca", "REDIS_CA_FILE")
    if redis_url is not None:
        from camproxy.accounts.location import parse_location
        from camproxy.cluster.redisurl import parse_redis_url

        try:
            parse_redis_url(redis_url)
        except ValueError as problem:
            raise ConfigError(str(problem)) from None
        if parse_location(database, source="--database").is_sqlite:
            raise ConfigError(
                "--redis needs a database the daemons share: a postgresql:// --database "
                "(or DATABASE_URL), not the SQLite file "
                f"{mask(database)!r}"
            )
    if redis_ca is not None and not Path(redis_ca).is_file():
        raise ConfigError(f"Redis CA file {redis_ca!r} does not exist")
    node = pick("node", "NODE_NAME") or default_node_name(listen)
    if not 0 < len(node) <= 100 or any(ch.isspace() for ch in node):
        raise ConfigError(f"node name {node!r} must be 1 to 100 characters, no spaces")

    return Config(
        redis_url=redis_url,
        redis_ca=redis_ca,
        node=node,
        listen=listen,
        camera_url=camera,
        camera_given=camera_option is not None,
        database=database,
        allowed_origins=tuple(origins),
        max_fps=max_fps,
        idle_close=idle_close,
        demo=demo,
        secret_key=secret_key,
        admin_username=env.get("ADMIN_USERNAME") or None,
        admin_password=env.get("ADMIN_PASSWORD") or None,
        log_level=log_level,
        log_file=env.get("LOG_FILE") or None,
        camera_ca=camera_ca,
        trusted_proxies=trusted_proxies,
        metrics_allow=metrics_allow,
        log_format=log_format,
        frame_timeout=frame_timeout,
    )


def _strings(value: object) -> Sequence[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    assert isinstance(value, (list, tuple))
    return [str(v) for v in value]
