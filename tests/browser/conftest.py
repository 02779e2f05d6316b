"""Browser tests: a demo camera and a whole daemon as subprocesses, driven by headless Chromium.

Two daemons: ``stack`` watches one camera (v1: ``/`` is its viewer page); ``fleet`` runs
with ``--demo`` (an emulated RoboCam ``default`` and a light-only ESP32 ``esp32``) plus
``garden``, a RoboCam in exclusive control mode, added with ``camproxy camera add`` before
the start. Everything listens on 127.0.0.1 on ports picked free at start. Each process is
stopped by its PID when its fixture ends. Chromium is Debian's (``/usr/bin/chromium``);
Playwright is never asked to download a browser. Without that binary the tests are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any

import attrs
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"
SECRET_KEY = "browser-tests-secret-key-0123456789abcdef"
#: ``twistd`` on this interpreter (``python -m twisted`` would be ``twist``, another runner).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: name -> (password, options of ``camproxy user add``, whether the user may control)
USERS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "alice": ("alice-Secret-1", ("--admin",), True),
    "bob": ("bob-Secret-2", (), True),
    "carol": ("carol-Secret-3", (), False),
    "dave": ("dave-Secret-4", (), True),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _health(port: int) -> dict[str, Any] | None:
    try:
        url = f"http://127.0.0.1:{port}/health"
        with urllib.request.urlopen(url, timeout=1.0) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _poll(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path
) -> None:
    """Wait for another process to become ready: there is no event to wait on across
    processes, so poll, and fail early (with its log) if it exits."""
    deadline = time.monotonic() + 30.0
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in time:\n{log.read_text()}")
        time.sleep(0.05)


def _read_frame(reader: IO[bytes]) -> tuple[int, bytes]:
    """One WebSocket frame from a server (unmasked): its opcode and payload."""
    head = reader.read(2)
    if len(head) < 2:
        raise ConnectionError("the camera closed the connection")
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(reader.read(2), "big")
    elif length == 127:
        length = int.from_bytes(reader.read(8), "big")
    return opcode, reader.read(length)


def _send_text(sock: socket.socket, text: str) -> None:
    """One masked text frame, as a client must send it (short messages only)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def ask_camera_position(port: int) -> tuple[int, int]:
    """Ask the demo camera itself where it is (CONTRACT §1 ``get_pos``), as another client.

    A few lines of RFC 6455 over a plain socket: a browser page cannot do it, as the
    demo camera serves no page to give it an origin of its own."""
    with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        reader = sock.makefile("rb")
        status = reader.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"camera refused the WebSocket: {status!r}")
        while reader.readline() not in (b"\r\n", b""):
            pass
        _send_text(sock, "get_pos")
        while True:
            opcode, payload = _read_frame(reader)
            if opcode == 0x8:
                raise ConnectionError("the camera closed the connection")
            if opcode == 0x1:
                message = json.loads(payload)
                if "x" in message and "y" in message:
                    sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))
                    return int(message["x"]), int(message["y"])


@attrs.define
class Stack:
    """The demo camera and the daemon under test, with their ports and logs.

    ``demo``: the daemon runs with ``--demo`` (its own emulated cameras) instead of
    ``--camera``, and is ready once ``cameras`` of them are connected.
    """

    directory: Path
    camera_port: int
    daemon_port: int
    demo: bool = False
    cameras: int = 1
    camera: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    _logs: list[IO[bytes]] = attrs.field(factory=list)
    _camera_starts: int = 0

    @property
    def database(self) -> Path:
        return self.directory / "db.sqlite"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon_port}"

    @property
    def camera_url(self) -> str:
        return f"ws://127.0.0.1:{self.camera_port}/ws"

    def _spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> Any:
        log_path = self.directory / log_name
        log = log_path.open("ab")
        self._logs.append(log)
        process = subprocess.Popen(
            argv,
            cwd=self.directory,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return process, log_path

    def cli(self, *args: str, stdin: str | None = None, group: str = "user") -> None:
        """Run ``camproxy user ...`` (or another group's command) on the daemon's database."""
        subprocess.run(
            [sys.executable, "-m", "camproxy.cli", group, *args, "--database", str(self.database)],
            input=stdin,
            text=True,
            check=True,
            capture_output=True,
            cwd=self.directory,
            timeout=60,
        )

    def camera_position(self) -> tuple[int, int]:
        return ask_camera_position(self.camera_port)

    def start_camera(self) -> None:
        self._camera_starts += 1
        listen = f"tcp:{self.camera_port}:interface=127.0.0.1"
        self.camera, log = self._spawn(
            [sys.executable, "-m", "camproxy.democam", "--listen", listen],
            f"democam-{self._camera_starts}.log",
        )
        camera = self.camera
        _poll("the demo camera", lambda: _port_open(self.camera_port), camera, log)

    def stop_camera(self) -> None:
        if self.camera is not None:
            _stop(self.camera)
            self.camera = None

    def start_daemon(self) -> None:
        cameras = ["--demo"] if self.demo else ["--camera", self.camera_url]
        self.daemon, log = self._spawn(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "camproxy",
                "--listen",
                f"tcp:{self.daemon_port}:interface=127.0.0.1",
                *cameras,
                "--database",
                str(self.database),
            ],
            "daemon.log",
            env={"SECRET_KEY": SECRET_KEY, "LOG_LEVEL": "INFO"},
        )
        daemon = self.daemon

        def camera_linked() -> bool:
            health = _health(self.daemon_port)
            return (
                health is not None
                and health.get("esp32_connected") is True
                and health.get("cameras", {}).get("connected", 1) >= self.cameras
            )

        _poll("the daemon", camera_linked, daemon, log)

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            _stop(self.daemon)
            self.daemon = None

    def stop(self) -> None:
        self.stop_daemon()
        self.stop_camera()
        for log in self._logs:
            log.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium: apt-get install chromium")
    running = Stack(tmp_path_factory.mktemp("camproxy-browser"), free_port(), free_port())
    try:
        add_users(running)
        running.start_camera()
        running.start_daemon()
        yield running
    finally:
        running.stop()


def add_users(stack: Stack) -> None:
    for name, (password, options, may_control) in USERS.items():
        stack.cli("add", name, *options, "--password-stdin", stdin=password + "\n")
        if not may_control:
            stack.cli("nocontrol", name)


#: The cameras of ``fleet`` (name -> title), by name as the pages list them.
FLEET_CAMERAS = {
    "default": "Demo RoboCam",
    "esp32": "Demo ESP32 CameraWebServer",
    "garden": "The garden",
}
#: A user of ``fleet`` who may view one camera only (``/`` is then its viewer page).
ONE_CAMERA_USER = "dave"


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A ``--demo`` daemon with three cameras: ``default`` (RoboCam), ``esp32`` (light
    only) and ``garden`` (a RoboCam of its own, exclusive control)."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium: apt-get install chromium")
    running = Stack(
        tmp_path_factory.mktemp("camproxy-fleet"),
        free_port(),
        free_port(),
        demo=True,
        cameras=len(FLEET_CAMERAS),
    )
    try:
        add_users(running)
        running.start_camera()
        running.cli(
            "add",
            "garden",
            running.camera_url,
            "--title",
            FLEET_CAMERAS["garden"],
            "--control",
            "exclusive",
            group="camera",
        )
        running.start_daemon()
        # The demo's cameras exist once the daemon has started: take two from dave now
        # (the daemon applies grants to new sessions at once).
        for camera in ("esp32", "garden"):
            running.cli("grant", camera, ONE_CAMERA_USER, "none", group="camera")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@attrs.define
class Pages:
    """Opens pages in fresh browser contexts, records console errors and page errors of
    every one of them, and closes them all at the end of the test."""

    browser: Any
    stack: Stack
    errors: list[str] = attrs.field(factory=list)
    expected: list[re.Pattern[str]] = attrs.field(factory=list)
    contexts: list[Any] = attrs.field(factory=list)

    def expect_console_error(self, pattern: str) -> None:
        """Allow console errors matching ``pattern`` (a browser's own report of something
        the test provokes on purpose, e.g. a refused WebSocket handshake)."""
        self.expected.append(re.compile(pattern))

    def new_context(self, **options: Any) -> Any:
        options.setdefault("viewport", {"width": 1366, "height": 768})
        context = self.browser.new_context(base_url=self.stack.url, **options)
        self.contexts.append(context)
        return context

    def watch(self, page: Any) -> Any:
        def console(message: Any) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text} ({message.location.get('url')})")

        page.on("console", console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        return page

    def new_page(self, context: Any = None, **options: Any) -> Any:
        if context is None:
            context = self.new_context(**options)
        return self.watch(context.new_page())

    def login(self, user: str, page: Any = None, **options: Any) -> Any:
        """A page on the viewer, logged in as ``user``."""
        from playwright.sync_api import expect

        if page is None:
            page = self.new_page(**options)
        page.goto("/login")
        page.fill("#username", user)
        page.fill("#password", USERS[user][0])
        page.click("#login-submit")
        page.wait_for_url(f"{self.stack.url}/")
        expect(page.locator("#user-name")).to_have_text(user)
        return page

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


def _pages(browser: Any, stack: Stack) -> Iterator[Pages]:
    opened = Pages(browser, stack)
    try:
        yield opened
    finally:
        opened.close()
    assert opened.unexpected_errors() == [], "errors in the browser console"


@pytest.fixture
def pages(browser: Any, stack: Stack) -> Iterator[Pages]:
    """Pages on the one-camera daemon."""
    yield from _pages(browser, stack)


@pytest.fixture
def fleet_pages(browser: Any, fleet: Stack) -> Iterator[Pages]:
    """Pages on the three-camera ``--demo`` daemon."""
    yield from _pages(browser, fleet)
