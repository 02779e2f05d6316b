"""Kind ``esp32``: a camera running Espressif's ``CameraWebServer`` example,
``esp32-cam-webserver`` or a compatible firmware, given by its base URL.

Both firmwares run two web servers: the controls on ``PORT`` (``/status``, ``/control``,
``/capture``) and the MJPEG stream on ``PORT + 1`` (``/stream`` in ``CameraWebServer``,
``/`` in ``esp32-cam-webserver``). The stream server's handler loops for as long as its
client stays, so a second stream client would wait forever: there is never more than one
stream connection, and none while the source is closed. ``/capture`` is never used (it
fires the flash); a snapshot comes from the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from camproxy.hub.source import Capabilities, CommandFailed, ISourceListener
from camproxy.sources.http import (
    RETRY_POLICY,
    CameraHttpClient,
    HttpError,
    HttpSourceSettings,
    describe,
    discard,
    read_body,
    status_text,
    with_timeout,
)
from camproxy.sources.httpcam import STREAM, HttpCameraSource

#: Where the two firmwares serve their stream, on the port after the base URL's.
STREAM_PATHS = ("/stream", "/")

#: ``/status`` is about 1 KB; anything much larger is not that page.
MAX_STATUS_BYTES = 64 * 1024

#: The value that switches the light fully on, per ``/control`` variable.
LIGHT_ON = {"led_intensity": 255, "lamp": 100}


def is_base_url(url: URL) -> bool:
    """``http(s)://HOST[:PORT]`` with nothing after it but an optional ``/``."""
    return (
        url.scheme in ("http", "https")
        and bool(url.host)
        and url.path in ((), ("",))
        and not url.query
        and not url.fragment
    )


def light_control(status: object) -> str | None:
    """The ``/control`` variable that switches the light, from ``/status``'s JSON.

    ``led_intensity`` (``CameraWebServer``; -1 when built without a LED) or ``lamp``
    (``esp32-cam-webserver``; -1 without a lamp): the first one reported at 0 or above.
    """
    if not isinstance(status, dict):
        return None
    for name in ("led_intensity", "lamp"):
        value = status.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return name
    return None


class Esp32Source(HttpCameraSource):
    """The stream and the light of an ESP32 camera web server.

    ``/status`` is read on every connect, before the stream, for the light capability;
    the light is switched through ``/control``.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        listener: ISourceListener,
        settings: HttpSourceSettings,
        *,
        retry_policy: Callable[[int], float] = RETRY_POLICY,
    ) -> None:
        super().__init__(reactor, listener, settings, kind=STREAM, retry_policy=retry_policy)
        if not is_base_url(self.url):
            raise ValueError(
                "an esp32 camera is given by its base URL, http(s)://HOST[:PORT], "
                f"not {self.redacted_url}"
            )
        port = self.url.port or (443 if self.url.scheme == "https" else 80)
        self.control_url = self.url.replace(path=(), query=(), fragment="")
        self.stream_port = port + 1
        self._stream_path = STREAM_PATHS[0]
        self._control = CameraHttpClient(reactor, settings)
        self._light_variable: str | None = None

    @property
    def kind(self) -> str:
        return "esp32"

    def when_closed(self) -> Deferred[None]:
        return gatherResults(
            [self._video.tracker.idle(), self._control.tracker.idle()]
        ).addCallback(lambda _: None)

    @property
    def light_variable(self) -> str | None:
        """``led_intensity`` or ``lamp`` once ``/status`` reported a light, else ``None``."""
        return self._light_variable

    def stream_url(self, path: str) -> URL:
        return self.control_url.replace(port=self.stream_port, path=(path.lstrip("/"),))

    # -- video -------------------------------------------------------------------

    def _request_video(self) -> Deferred[IResponse]:
        return Deferred.fromCoroutine(self._status_then_stream())

    async def _status_then_stream(self) -> IResponse:
        await self._read_status()
        first = self._stream_path
        response = await self._video.get(self.stream_url(first), self._stall)
        if response.code != 404:
            return response
        # esp32-cam-webserver serves its stream at / (CameraWebServer at /stream).
        discard(response)
        await self._video.tracker.idle()  # one connection to the stream port at a time
        other = STREAM_PATHS[1] if first == STREAM_PATHS[0] else STREAM_PATHS[0]
        response = await self._video.get(self.stream_url(other), self._stall)
        if response.code == 404:
            discard(response)
            raise HttpError(f"the camera answered {status_text(response)} at /stream and /")
        self._stream_path = other
        return response

    async def _read_status(self) -> None:
        timeout = self.settings.request_timeout
        try:
            response = await self._control.get(self.control_url.child("status"), timeout)
            if response.code != 200:
                discard(response)
                raise HttpError(f"/status answered {status_text(response)}")
            body = await with_timeout(read_body(response, MAX_STATUS_BYTES), timeout, self._reactor)
            status = json.loads(body)
        except CancelledError:
            raise
        except Exception:
            # Video may still work: keep what was known of the light, and say why.
            self._complain(f"cannot read /status ({describe(Failure(), timeout)})")
            return
        variable = light_control(status)
        self._light_variable = variable
        capabilities = Capabilities(pan_tilt=False, light=variable is not None)
        if capabilities != self.capabilities:
            self.capabilities = capabilities
            self._listener.capabilities_changed()

    # -- light -------------------------------------------------------------------------

    def set_light(self, on: bool) -> Deferred[None]:
        return Deferred.fromCoroutine(self._switch_light(on))

    async def _switch_light(self, on: bool) -> None:
        variable = self._light_variable
        if variable is None:
            raise CommandFailed("the camera reported no light")
        value = LIGHT_ON[variable] if on else 0
        url = self.control_url.child("control").add("var", variable).add("val", str(value))
        timeout = self.settings.request_timeout
        try:
            response = await self._control.get(url, timeout)
        except CancelledError:
            raise
        except Exception as exc:
            raise CommandFailed(f"/control failed: {describe(Failure(), timeout)}") from exc
        discard(response)
        if response.code != 200:
            raise CommandFailed(f"/control answered {status_text(response)}")
