"""Real Redis and PostgreSQL servers for tests: 127.0.0.1, a free port, a temporary directory.

Each server is its own process, stopped by its PID at teardown; readiness is a bounded poll
(the server is another process, there is no event to wait on). Fault helpers freeze
(SIGSTOP), thaw (SIGCONT), kill (SIGKILL) and restart a server on the same port.

The binaries come from the distribution's packages (``redis-server``, ``postgresql``). If
they are missing the fixtures fail, loudly: CI installs them. Set
``CAMPROXY_ALLOW_SKIP_SERVERS=1`` to skip those tests instead, on a machine without them.

PostgreSQL refuses to run as root: under root, its commands run as the ``postgres`` user
(the process itself switches user, so the PID we hold is the server's; ``runuser`` would
fork and leave us the PID of a parent that does not pass signals on).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

ALLOW_SKIP = "CAMPROXY_ALLOW_SKIP_SERVERS"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server that needs a number
    before it starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def missing(what: str) -> None:
    """Fail (or skip, if allowed) a test whose server binaries are not installed."""
    message = f"{what} is not installed (apt-get install redis-server postgresql)"
    if os.environ.get(ALLOW_SKIP) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}; set {ALLOW_SKIP}=1 to skip these tests instead", pytrace=False)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        time.sleep(0.02)


def _stop_process(process: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGCONT)  # a stopped process handles no signal but KILL
    os.kill(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


class RespError(Exception):
    """An error reply from Redis."""


def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        return None if length < 0 else stream.read(length + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream) for _ in range(count)]
    raise ValueError(f"unexpected Redis reply {line!r}")


@attrs.define
class RedisServer:
    """A ``redis-server`` process; ``extra`` are more command-line options, e.g.
    ``["--client-output-buffer-limit", "pubsub 64kb 32kb 1"]``."""

    directory: Path
    port: int = attrs.field(factory=free_port)
    extra: Sequence[str] = ()
    password: str | None = None
    tls: tuple[Path, Path] | None = None  # (certificate, key), for rediss://
    unix: bool = False  # also listen on ``unix_socket``
    process: subprocess.Popen[bytes] | None = None

    @property
    def unix_socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        login = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{login}127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 10.0) -> None:
        argv = [
            redis_binary(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
        ]
        if self.tls:
            certificate, key = self.tls
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
            argv += ["--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self.port)]
        if self.password:
            argv += ["--requirepass", self.password]
        if self.unix:
            argv += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        argv += list(self.extra)
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
            try:
                return bool(self.command("PING", timeout=0.5) == "PONG")
            except (OSError, RespError):
                return False

        wait_for(answers, timeout, f"redis-server answering on port {self.port}")

    def _connect(self, timeout: float) -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        if not self.tls:
            return raw
        context = ssl.create_default_context(cafile=str(self.tls[0]))
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def command(self, *args: str | bytes | int, timeout: float = 2.0) -> Any:
        """Run one command on a new connection and return its reply (blocking, bounded)."""
        encoded = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        with self._connect(timeout) as connection, connection.makefile("rb") as stream:
            if self.password:
                connection.sendall(_resp([b"AUTH", self.password.encode()]))
                _read_reply(stream)
            connection.sendall(_resp(encoded))
            return _read_reply(stream)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its connections (and accepts new ones: the kernel
        does) but answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a bounded wait)."""
        if self.process is not None:
            _stop_process(self.process, signal.SIGTERM)

    def restart(self, timeout: float = 10.0) -> None:
        """Start again on the same port (and with no data: nothing is saved)."""
        self.stop()
        self.start(timeout)


def redis_binary() -> str:
    """The ``redis-server`` on the PATH (the test fails, or skips, without one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server")
    assert binary is not None
    return binary


def _resp(args: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL's binaries from the distribution, or those on the PATH."""
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    versions = [bindir for bindir in versions if bindir.parent.name.isdigit()]
    if versions:
        return max(versions, key=lambda bindir: int(bindir.parent.name))
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


@attrs.define
class PostgresServer:
    """A PostgreSQL cluster of its own: ``initdb``, then ``postgres`` on 127.0.0.1, with a
    password role ``user`` that owns the database ``dbname``."""

    directory: Path
    bindir: Path
    port: int = attrs.field(factory=free_port)
    user: str = "camproxy"
    password: str = "camproxy-test-password"
    dbname: str = "camproxy"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.dbname}"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a command as the ``postgres`` user when we are root."""
        options: dict[str, Any] = {"cwd": self.directory, "stdin": subprocess.DEVNULL}
        if os.geteuid() == 0:
            options.update(user="postgres", group="postgres", extra_groups=[])
            options["env"] = {**os.environ, "HOME": str(self.directory), "USER": "postgres"}
        return options

    def _run(self, *argv: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            timeout=timeout,
            check=False,
            **self._as_owner(),
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def init(self) -> None:
        """Make the cluster, the role and the database."""
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        self.start()
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser, over the server's Unix socket."""
        return self._run(
            str(self.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.directory),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        )

    def start(self, timeout: float = 30.0) -> None:
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, **self._as_owner()
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log()[-2000:]}")
            checked = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
                timeout=10,
            )
            return checked.returncode == 0

        wait_for(ready, timeout, f"postgres accepting connections on port {self.port}")

    def stop(self) -> None:
        """SIGINT: the "fast" shutdown (SIGKILL after a bounded wait)."""
        if self.process is not None:
            _stop_process(self.process, signal.SIGINT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start again, same port and data."""
        self.stop()
        self.start(timeout)


def _temporary_directory(prefix: str) -> Path:
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL runs
    # as the postgres user.
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start Redis servers for one test (``redis_factory(extra=[...], password=...)``);
    each is stopped by its PID, and its directory removed, at teardown."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        redis_binary()
        server = RedisServer(_temporary_directory("camproxy-redis-"), **options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the whole session, for tests that do not hurt it (give each test its
    own key and channel names); the tests that stop it use :func:`redis_factory`."""
    redis_binary()
    server = RedisServer(_temporary_directory("camproxy-redis-"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def _new_postgres() -> PostgresServer:
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL")
    assert bindir is not None
    return PostgresServer(_temporary_directory("camproxy-pg-"), bindir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session; ``.url`` is a ``postgresql://`` URL. Tests
    that stop or restart it use :func:`postgres_factory`."""
    server = _new_postgres()
    try:
        server.init()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture
def postgres_factory() -> Iterator[Callable[[], PostgresServer]]:
    """Start PostgreSQL servers of one test's own (a second or so each); stopped by PID,
    directories removed, at teardown."""
    started: list[PostgresServer] = []

    def start() -> PostgresServer:
        server = _new_postgres()
        started.append(server)
        server.init()
        return server

    yield start
    for server in started:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
