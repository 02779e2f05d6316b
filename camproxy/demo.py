"""``--demo``: emulated cameras inside the daemon, on private UNIX sockets only it knows.

A RoboCam (``default``) and a stock ESP32 ``CameraWebServer`` (``esp32``), so a newcomer
sees the grid, pan/tilt and a light-only camera at once. Their URLs name hosts that do
not exist (``democam``, ``democam-esp32``); :meth:`DemoCameras.unix_socket` tells the
sources which socket each one is.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from camproxy.fleet import DEFAULT_CAMERA, CameraSpec

ROBOCAM_URL = "ws://democam/ws"
ESP32_URL = "http://democam-esp32"
ESP32_HOST = "democam-esp32"


class DemoCameras(Service):
    """The emulated cameras of ``--demo``, started and stopped with the daemon."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.directory = tempfile.mkdtemp(prefix="camproxy-demo-")
        self.sockets = {
            ("democam", 80): f"{self.directory}/robocam.sock",
            (ESP32_HOST, 80): f"{self.directory}/esp32-control.sock",
            (ESP32_HOST, 81): f"{self.directory}/esp32-stream.sock",
        }
        self._robocam_port: Any = None
        self.robocam: Any = None
        self.esp32: Any = None

    def unix_socket(self, host: str, port: int) -> str | None:
        """The socket of a demo camera's host and port, or None for any other."""
        return self.sockets.get((host, port))

    def specs(self) -> list[CameraSpec]:
        """The demo's cameras (made sure of in the database at start)."""
        return [
            CameraSpec(DEFAULT_CAMERA, ROBOCAM_URL, title="Demo RoboCam", kind="robocam"),
            CameraSpec("esp32", ESP32_URL, title="Demo ESP32 CameraWebServer", kind="esp32"),
        ]

    def startService(self) -> None:
        from camproxy.democam.esp32 import listen_esp32_camera
        from camproxy.democam.robocam import listen_demo_camera

        super().startService()

        def robocam_listening(result: tuple[Any, Any]) -> None:
            self._robocam_port, self.robocam = result

        def esp32_listening(server: Any) -> None:
            self.esp32 = server

        listen_demo_camera(self._reactor, f"unix:{self.sockets['democam', 80]}").addCallback(
            robocam_listening
        )
        listen_esp32_camera(
            self._reactor,
            f"unix:{self.sockets[(ESP32_HOST, 80)]}",
            f"unix:{self.sockets[(ESP32_HOST, 81)]}",
            fps=15,
        ).addCallback(esp32_listening)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        stopping: list[Deferred[Any]] = []
        if self.robocam is not None:
            self.robocam.drop_all()
        if self._robocam_port is not None:
            stopping.append(self._robocam_port.stopListening())
        if self.esp32 is not None:
            stopping.append(self.esp32.stop())
        done = DeferredList(stopping, consumeErrors=True)
        return done.addBoth(lambda _: shutil.rmtree(self.directory, ignore_errors=True))
