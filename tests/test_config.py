"""Options over environment over .env, and one-line errors for bad values."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from camproxy.config import Config, ConfigError, build_config, read_environment
from camproxy.tap import Options

BASE_ENV = {"SECRET_KEY": "s3cret"}


def test_defaults_follow_the_contract() -> None:
    config = build_config({}, BASE_ENV)
    assert config.listen == "tcp:5000:interface=0.0.0.0"
    assert config.camera_url == "ws://192.168.1.100:80/ws"
    assert config.database == "robocam.db"
    assert (config.max_fps, config.idle_close) == (10.0, 30.0)
    assert config.allowed_origins == ()


def test_environment_variables() -> None:
    env = {
        **BASE_ENV,
        "HOST": "127.0.0.1",
        "PORT": "8080",
        "ESP32CAM_IP": "10.0.0.7",
        "ESP32CAM_PORT": "81",
        "ESP32CAM_PATH": "/cam",
        "DATABASE_URL": "sqlite:////var/lib/camproxy/users.db",
        "ALLOWED_ORIGINS": "https://a.example, https://b.example:8443",
        "MAX_FPS": "25",
        "IDLE_CLOSE": "0",
        "ADMIN_USERNAME": "root",
        "ADMIN_PASSWORD": "pw",
        "LOG_LEVEL": "debug",
        "LOG_FILE": "/tmp/x.log",
    }
    config = build_config({}, env)
    assert config.listen == "tcp:8080:interface=127.0.0.1"
    assert config.camera_url == "ws://10.0.0.7:81/cam"
    assert config.database == "/var/lib/camproxy/users.db"
    assert config.allowed_origins == ("https://a.example", "https://b.example:8443")
    assert (config.max_fps, config.idle_close) == (25.0, 0.0)
    assert (config.admin_username, config.admin_password) == ("root", "pw")
    assert (config.log_level, config.log_file) == ("DEBUG", "/tmp/x.log")


def test_relative_database_url() -> None:
    assert build_config({}, {**BASE_ENV, "DATABASE_URL": "sqlite:///rel.db"}).database == "rel.db"


def test_options_beat_environment() -> None:
    env = {**BASE_ENV, "MAX_FPS": "25", "PORT": "8080", "ALLOWED_ORIGINS": "https://a.example"}
    config = build_config(
        {"max-fps": "5", "listen": "tcp:9000", "allowed-origin": ["https://c.example"]}, env
    )
    assert config.max_fps == 5.0
    assert config.listen == "tcp:9000"
    assert config.allowed_origins == ("https://c.example",)


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MAX_FPS=7\nIDLE_CLOSE=12\nSECRET_KEY=fromfile\n")
    monkeypatch.setenv("MAX_FPS", "9")
    monkeypatch.delenv("IDLE_CLOSE", raising=False)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    config = build_config({}, read_environment(tmp_path))
    assert (config.max_fps, config.idle_close, config.secret_key) == (9.0, 12.0, "fromfile")


@pytest.mark.parametrize(
    ("options", "env", "fragment"),
    [
        ({"max-fps": "fast"}, {}, "max-fps must be a number"),
        ({"max-fps": "0"}, {}, "max-fps must be between"),
        ({"max-fps": "nan"}, {}, "max-fps must be between"),
        ({"idle-close": "-1"}, {}, "idle-close"),
        ({}, {"MAX_FPS": "ten"}, "max-fps must be a number"),
        ({"camera": "ftp://cam/ws"}, {}, "camera URL"),
        ({"camera": "ws://"}, {}, "camera URL"),
        ({"allowed-origin": ["not an origin"]}, {}, "allowed origin"),
        ({}, {"PORT": "http"}, "PORT must be a port number"),
        ({}, {"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({}, {"DATABASE_URL": "postgres://db"}, "sqlite"),
    ],
)
def test_bad_values_are_config_errors(
    options: dict[str, object], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(options, {**BASE_ENV, **env})
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_secret_key_is_required_unless_demo() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        build_config({}, {})
    demo = build_config({"demo": True}, {})
    assert len(demo.secret_key) >= 32 and demo.demo


def test_options_parse_repeatable_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "k")
    options = Options()
    options.parseOptions(
        ["--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example"]
    )
    assert isinstance(options.config, Config)
    assert options.config.allowed_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    "argv", [["--bogus"], ["--max-fps", "x"], ["--max-fps"], ["--camera", "ftp://x"]]
)
def test_bad_options_exit_with_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "k")
    with pytest.raises(SystemExit) as exit_:
        Options().parseOptions(argv)
    message = str(exit_.value.code)
    assert message.startswith("camproxy: error:") and "\n" not in message


def test_cluster_settings_and_their_refusals() -> None:
    postgres = "postgresql://u:pw@127.0.0.1:5432/camproxy"
    config = build_config(
        {"redis": "redis://:pw-xyz@127.0.0.1:6379/2", "database": postgres, "node": "n1"},
        {"SECRET_KEY": "key-xyz", "ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "admin-xyz"},
    )
    assert (config.redis_url, config.node) == ("redis://:pw-xyz@127.0.0.1:6379/2", "n1")
    assert not any(s in repr(config) for s in ("pw-xyz", "key-xyz", "admin-xyz"))
    # --node's default (CONTRACT §8): this host's name and the port the daemon listens on.
    host = socket.gethostname()
    assert build_config({"database": postgres}, {"SECRET_KEY": "k"}).node == f"{host}:5000"
    assert build_config({}, {"SECRET_KEY": "k", "PORT": "8081"}).node == f"{host}:8081"
    listen = {"listen": "tcp:6001:interface=127.0.0.1"}
    assert build_config(listen, {"SECRET_KEY": "k"}).node == f"{host}:6001"
    assert build_config({}, {"SECRET_KEY": "k", "NODE_NAME": "edge-2"}).node == "edge-2"
    given = build_config({"node": "n9"}, {"SECRET_KEY": "k", "NODE_NAME": "edge-2"})
    assert given.node == "n9"  # the option over the environment
    with pytest.raises(ConfigError, match="SQLite") as refused:
        build_config({"redis": "redis://127.0.0.1"}, {"SECRET_KEY": "k"})
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="port must be") as bad:
        build_config(
            {"redis": "redis://:hunter2@127.0.0.1:999999", "database": postgres},
            {"SECRET_KEY": "k"},
        )
    assert "hunter2" not in str(bad.value)
