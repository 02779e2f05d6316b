"""Emulators of the HTTP firmwares that ESP32 cameras run: Espressif's and esp32-cam-webserver.

Both firmwares run two ESP-IDF web servers, each a single task: *control* (port 80: the page,
``/status``, ``/control``, ``/capture``...) and *stream* (port 81 by default, the control port
+ 1 for the stock firmware: the MJPEG stream). The stream handler loops inside the stream
server's only task, so the firmware serves **one stream at a time**: a second client's
connection is accepted and its request read, and then nothing answers it until the first
stream ends; then it gets the stream.

- :class:`CameraWebServer` models Espressif's ``CameraWebServer`` example
  (``app_httpd.cpp`` in arduino-esp32): an OV2640 sensor's settings, the LED illuminator
  (``led_intensity``, lit while streaming, flashed 150 ms by ``/capture``), ``/status`` JSON
  byte for byte, ``/control`` with the firmware's answers (404 without ``var`` or ``val``, 500
  for an unknown ``var`` or a value the sensor refuses, an empty 200 otherwise).
  :class:`Esp32CameraServer` serves it: the stream is
  ``multipart/x-mixed-replace;boundary=123456789000000000000987654321``, chunked, three chunks
  a frame: ``\\r\\n--BOUNDARY\\r\\n``, the part headers (``Content-Type``, ``Content-Length``,
  ``X-Timestamp``), the JPEG.
- :class:`Esp32CamWebserver` models easytarget's ``esp32-cam-webserver`` (4.x): ``lamp`` 0..100
  (-1 without a lamp) and ``autolamp`` instead of ``led_intensity``, its own ``/status``
  fields, ``/stop``, and :class:`Esp32CamWebserverServer` serves its stream at ``/`` of the stream
  port (``/stream`` is a 404 there since 3.x), with ``/view`` (a viewer page) and ``/info``
  beside it; the first boundary goes out at once, then each part is followed by the next
  boundary; no ``X-Timestamp``, no ``X-Framerate``.

Start them with :func:`listen_esp32_camera` and :func:`listen_esp32_cam_webserver`.
"""

from __future__ import annotations

import gzip
import io
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from PIL import Image
from twisted.internet.defer import Deferred

from camproxy.democam.httpcam import (
    CAM_WEBSERVER_STREAM,
    STOCK_STREAM,
    HttpCameraServer,
    PatternFrames,
    esp_quality_to_pillow,
)
from camproxy.democam.httpwire import RECORDED, Exchange, atoi, query_value

FRAMESIZES: tuple[tuple[str, int, int], ...] = (
    ("96X96", 96, 96),
    ("QQVGA", 160, 120),
    ("QCIF", 176, 144),
    ("HQVGA", 240, 176),
    ("240X240", 240, 240),
    ("QVGA", 320, 240),
    ("CIF", 400, 296),
    ("HVGA", 480, 320),
    ("VGA", 640, 480),
    ("SVGA", 800, 600),
    ("XGA", 1024, 768),
    ("HD", 1280, 720),
    ("SXGA", 1280, 1024),
    ("UXGA", 1600, 1200),
)
"""The esp32-camera ``framesize_t`` values an OV2640 supports (0..13), with their pixels."""

PIXFORMAT_JPEG = 4
LED_MAX_INTENSITY = 255
CAPTURE_FLASH_SECONDS = 0.150
"""How long the stock firmware lights the LED before ``/capture`` grabs the frame."""

_SIGNED = ("brightness", "contrast", "saturation", "sharpness", "ae_level")
_LEVELS = ("contrast", "brightness", "saturation", "ae_level")
_SWITCHES = {
    "colorbar": "colorbar",
    "awb": "awb",
    "agc": "agc",
    "aec": "aec",
    "hmirror": "hmirror",
    "vflip": "vflip",
    "awb_gain": "awb_gain",
    "aec2": "aec2",
    "dcw": "dcw",
    "bpc": "bpc",
    "wpc": "wpc",
    "raw_gma": "raw_gma",
    "lenc": "lenc",
}
SENSOR_VARS = (
    "framesize",
    "quality",
    "contrast",
    "brightness",
    "saturation",
    "gainceiling",
    *_SWITCHES,
    "agc_gain",
    "aec_value",
    "special_effect",
    "wb_mode",
    "ae_level",
)
"""``/control`` variables both firmwares pass to the sensor driver."""


def _u32(value: int) -> int:
    """A C ``int`` printed with ``%u``."""
    return value & 0xFFFFFFFF


def _s8(value: int) -> int:
    return ((value + 128) & 0xFF) - 128


@attrs.define
class Sensor:
    """An OV2640's settings as the esp32-camera driver reports them (``sensor->status``).

    The defaults are what an AI-Thinker ESP32-CAM reports after start-up.
    """

    framesize: int = 5
    quality: int = 10
    brightness: int = 0
    contrast: int = 0
    saturation: int = 0
    sharpness: int = 0
    special_effect: int = 0
    wb_mode: int = 0
    awb: int = 1
    awb_gain: int = 1
    aec: int = 1
    aec2: int = 0
    ae_level: int = 0
    aec_value: int = 204
    agc: int = 1
    agc_gain: int = 0
    gainceiling: int = 0
    bpc: int = 0
    wpc: int = 1
    raw_gma: int = 1
    lenc: int = 1
    hmirror: int = 0
    vflip: int = 0
    dcw: int = 1
    colorbar: int = 0

    def set(self, var: str, value: int) -> int:
        """Apply ``/control?var=...&val=...`` for a sensor variable; the driver's result.

        0 on success, -1 when the driver refuses the value (a level outside -2..2, an effect
        outside 0..6, a white balance mode outside 0..4). ``framesize`` past UXGA becomes UXGA,
        gains and exposure are clamped, switches keep the low byte, as the driver does.
        """
        if var == "framesize":
            self.framesize = value if 0 <= value < len(FRAMESIZES) else len(FRAMESIZES) - 1
        elif var in _LEVELS:
            if not -2 <= value <= 2:
                return -1
            setattr(self, var, value)
        elif var == "special_effect":
            if not 0 <= value <= 6:
                return -1
            self.special_effect = value
        elif var == "wb_mode":
            if not 0 <= value <= 4:
                return -1
            self.wb_mode = value
        elif var == "agc_gain":
            self.agc_gain = max(0, min(30, value))
        elif var == "aec_value":
            self.aec_value = max(0, min(1200, value))
        elif var in ("quality", "gainceiling"):
            setattr(self, var, value & 0xFF)
        elif var in _SWITCHES:
            setattr(self, _SWITCHES[var], value & 0xFF)
        else:
            raise KeyError(var)
        return 0

    def field(self, name: str) -> int:
        """A status field as ``%d`` (signed ones) or ``%u`` prints it."""
        value: int = getattr(self, name)
        if name in _SIGNED:
            return _s8(value)
        return value if name == "aec_value" else value & 0xFF

    @property
    def size(self) -> tuple[int, int]:
        """The frame size in pixels."""
        _name, width, height = FRAMESIZES[self.framesize]
        return width, height


def _json_fields(fields: list[tuple[str, int | str]]) -> bytes:
    """``{"a":1,"b":"x"}`` exactly as the firmwares' ``sprintf`` calls build it."""
    parts = []
    for name, value in fields:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        parts.append(f'"{name}":{shown}')
    return ("{" + ",".join(parts) + "}").encode("utf-8")


_STOCK_STATUS_ORDER = (
    "framesize",
    "quality",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "special_effect",
    "wb_mode",
    "awb",
    "awb_gain",
    "aec",
    "aec2",
    "ae_level",
    "aec_value",
    "agc",
    "agc_gain",
    "gainceiling",
    "bpc",
    "wpc",
    "raw_gma",
    "lenc",
    "hmirror",
    "dcw",
    "colorbar",
)


@attrs.define
class CameraWebServer:
    """Espressif's ``CameraWebServer`` example firmware with an OV2640, without sockets.

    ``led_duty`` is ``led_intensity`` as set (any integer; ``/status`` prints it with
    ``%u``). The LED shines at it (at most 255) while a stream runs, and during the 150 ms
    ``/capture`` flash; otherwise it is dark. ``led_illuminator`` False is a build without
    the LED: ``led_intensity`` is -1 in ``/status`` and an unknown variable for ``/control``.
    ``face_detection`` True is an older build on a board with PSRAM, which adds
    ``face_detect`` to ``/status`` and ``/control``. ``now`` is the clock drawn on the
    pictures (the server gives its reactor's when None).

    Records: ``captures`` (``/capture`` requests served), ``flashes`` (those that lit the
    LED), ``controls`` (the latest ``(var, val)`` accepted by ``/control``).
    """

    now: Callable[[], float] | None = attrs.field(default=None, repr=False)
    sensor: Sensor = attrs.field(factory=Sensor)
    led_illuminator: bool = True
    led_duty: int = 0
    face_detection: bool = False
    face_detect: int = 0
    xclk: int = 20
    pixformat: int = PIXFORMAT_JPEG
    registers: dict[int, int] = attrs.field(factory=lambda: {0xD3: 8, 0x111: 0, 0x132: 137})
    streaming: bool = False
    flashing: bool = False
    captures: int = 0
    flashes: int = 0
    controls: deque[tuple[str, int]] = attrs.field(factory=lambda: deque(maxlen=RECORDED))
    frames: PatternFrames = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.frames = PatternFrames(lambda: self.now() if self.now is not None else 0.0)

    # --- the LED ----------------------------------------------------------------------------

    @property
    def led_level(self) -> int:
        """The LED's PWM duty now (0..255): ``led_duty`` while streaming or flashing, else 0."""
        if not self.led_illuminator or not (self.streaming or self.flashing):
            return 0
        return max(0, min(LED_MAX_INTENSITY, self.led_duty))

    # --- pictures ---------------------------------------------------------------------------

    def picture(self) -> bytes:
        """The JPEG the sensor gives now: its frame size and quality, lit while the LED is."""
        width, height = self.sensor.size
        quality = esp_quality_to_pillow(self.sensor.quality)
        return self.frames.render(width, height, quality, self.led_level > 0)

    def begin_capture(self) -> float:
        """``/capture`` starts: the LED goes on; returns the seconds before the frame is grabbed."""
        self.captures += 1
        if not self.led_illuminator:
            return 0.0
        self.flashing = True
        if self.led_level > 0:
            self.flashes += 1
        return CAPTURE_FLASH_SECONDS

    def end_capture(self) -> bytes:
        """``/capture`` grabs its frame, then turns the LED off."""
        jpeg = self.picture()
        self.flashing = False
        return jpeg

    def stream_started(self) -> None:
        """The stream handler starts (``isStreaming``: the LED shines at ``led_intensity``)."""
        self.streaming = True

    def stream_ended(self) -> None:
        """The stream handler returns (the LED goes off)."""
        self.streaming = False

    # --- the control server -----------------------------------------------------------------

    def status_json(self) -> bytes:
        """``/status``, byte for byte."""
        fields: list[tuple[str, int | str]] = [
            (f"0x{register:x}", value & 0xFF) for register, value in self.registers.items()
        ]
        fields += [("xclk", _u32(self.xclk)), ("pixformat", self.pixformat)]
        fields += [(name, self.sensor.field(name)) for name in _STOCK_STATUS_ORDER]
        fields.append(("led_intensity", _u32(self.led_duty) if self.led_illuminator else -1))
        if self.face_detection:
            fields.append(("face_detect", self.face_detect & 0xFF))
        return _json_fields(fields)

    def control(self, query: str | None) -> int:
        """``/control?var=...&val=...``: the HTTP status the firmware answers with.

        404 without a query or without ``var`` or ``val`` (each at most 31 bytes), 500 for an
        unknown variable or a value the sensor refuses, 200 otherwise. ``val`` is read with
        ``atoi``: ``abc`` is 0, ``12abc`` is 12.
        """
        var = query_value(query, "var")
        val_text = query_value(query, "val")
        if var is None or val_text is None:
            return 404
        value = atoi(val_text)
        result = 0
        if var == "framesize":
            if self.pixformat == PIXFORMAT_JPEG:
                result = self.sensor.set(var, value)
        elif var in SENSOR_VARS:
            result = self.sensor.set(var, value)
        elif var == "led_intensity" and self.led_illuminator:
            self.led_duty = value
        elif var == "face_detect" and self.face_detection:
            self.face_detect = value
        else:
            result = -1
        if result < 0:
            return 500
        self.controls.append((var, value))
        return 200

    def set_xclk(self, query: str | None) -> int:
        """``/xclk?xclk=MHZ``: 404 without it, else 200."""
        text = query_value(query, "xclk")
        if text is None:
            return 404
        self.xclk = atoi(text)
        return 200

    def set_reg(self, query: str | None) -> int:
        """``/reg?reg=&mask=&val=``: writes a sensor register."""
        values = [query_value(query, key) for key in ("reg", "mask", "val")]
        if None in values:
            return 404
        register, mask, value = (atoi(v or "") for v in values)
        old = self.registers.get(register, 0)
        self.registers[register] = (old & ~mask) | (value & mask)
        return 200

    def get_reg(self, query: str | None) -> tuple[int, bytes]:
        """``/greg?reg=&mask=``: the register's value in decimal."""
        register_text, mask_text = query_value(query, "reg"), query_value(query, "mask")
        if register_text is None or mask_text is None:
            return 404, b""
        value = self.registers.get(atoi(register_text), 0) & atoi(mask_text)
        return 200, str(value).encode("ascii")

    def needs_query(self, query: str | None) -> int:
        """``/pll`` and ``/resolution``: 404 without a query, else accepted (200)."""
        return 200 if query else 404


_CAM_WEBSERVER_STATUS_ORDER = (
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "special_effect",
    "wb_mode",
    "awb",
    "awb_gain",
    "aec",
    "aec2",
    "ae_level",
    "aec_value",
    "agc",
    "agc_gain",
    "gainceiling",
    "bpc",
    "wpc",
    "raw_gma",
    "lenc",
    "vflip",
    "hmirror",
    "dcw",
    "colorbar",
)

LAMP_PWM_MAX = 511
"""esp32-cam-webserver drives its lamp with 9-bit PWM."""
CAM_WEBSERVER_VERSION = "4.0"


@attrs.define
class Esp32CamWebserver:
    """easytarget's ``esp32-cam-webserver`` (4.x) firmware with an OV2640, without sockets.

    ``lamp`` is 0..100 (per cent), or -1 for a board without a lamp (then ``lamp`` and
    ``autolamp`` are unknown variables: 500). Without ``autolamp`` the lamp shines at
    ``lamp`` all the time; with it, only while a stream runs or a capture is taken.
    ``min_frame_time`` (ms) slows the stream down. ``stream_url`` is what ``/status`` and
    ``/info`` show (the server sets it once listening); ``now`` as for
    :class:`CameraWebServer`.

    Records: ``images_served`` (``/capture``), ``streams_served`` (streams ended),
    ``stream_count`` (0 or 1), ``flashes`` (captures that lit the lamp), ``reboots``,
    ``controls`` (the latest accepted ``(var, val)``).
    """

    now: Callable[[], float] | None = attrs.field(default=None, repr=False)
    sensor: Sensor = attrs.field(factory=lambda: Sensor(framesize=9, quality=12))
    lamp: int = 0
    autolamp: bool = False
    min_frame_time: int = 0
    xclk: int = 8
    rotate: int = 0
    cam_name: str = "ESP32 camera server"
    code_ver: str = "Mar 10 2022 @ 14:00:45"
    stream_url: str = "Undefined"
    stream_count: int = 0
    capturing: bool = False
    streams_served: int = 0
    images_served: int = 0
    flashes: int = 0
    reboots: int = 0
    controls: deque[tuple[str, int]] = attrs.field(factory=lambda: deque(maxlen=RECORDED))
    frames: PatternFrames = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.frames = PatternFrames(lambda: self.now() if self.now is not None else 0.0)
        if self.lamp != -1:
            self.lamp = max(0, min(100, self.lamp))

    @property
    def has_lamp(self) -> bool:
        """Whether the board has a lamp (``lamp`` is not -1)."""
        return self.lamp != -1

    @property
    def lamp_level(self) -> int:
        """The lamp's PWM duty now (0..511), on the firmware's exponential curve."""
        if not self.has_lamp:
            return 0
        if self.autolamp and not (self.stream_count or self.capturing):
            return 0
        return round((2 ** (1 + self.lamp * 0.02) - 2) / 6 * LAMP_PWM_MAX)

    def picture(self) -> bytes:
        """The JPEG the sensor gives now, lit while the lamp shines."""
        width, height = self.sensor.size
        quality = esp_quality_to_pillow(self.sensor.quality)
        return self.frames.render(width, height, quality, self.lamp_level > 0)

    def begin_capture(self) -> float:
        """``/capture`` starts; the seconds before the frame is grabbed (lamp, status LED)."""
        if self.autolamp and self.has_lamp:
            self.capturing = True
            if self.lamp_level > 0:
                self.flashes += 1
            return 0.150
        return 0.075

    def end_capture(self) -> bytes:
        """``/capture`` grabs its frame; the lamp goes back to what it was."""
        jpeg = self.picture()
        self.images_served += 1
        self.capturing = False
        return jpeg

    def stream_started(self) -> None:
        """A stream starts (``streamCount`` 1; with ``autolamp`` the lamp goes on)."""
        self.stream_count = 1

    def stream_ended(self) -> None:
        """A stream ends."""
        self.stream_count = 0
        self.streams_served += 1

    def status_json(self) -> bytes:
        """``/status``, byte for byte (``rotate`` is a string there, as in the firmware)."""
        sensor = self.sensor
        fields: list[tuple[str, int | str]] = [
            ("lamp", self.lamp),
            ("autolamp", int(self.autolamp)),
            ("min_frame_time", self.min_frame_time),
            ("framesize", sensor.field("framesize")),
            ("quality", sensor.field("quality")),
            ("xclk", _u32(self.xclk)),
        ]
        fields += [(name, sensor.field(name)) for name in _CAM_WEBSERVER_STATUS_ORDER]
        fields += [
            ("cam_name", self.cam_name),
            ("code_ver", self.code_ver),
            ("rotate", str(self.rotate)),
            ("stream_url", self.stream_url),
        ]
        return _json_fields(fields)

    def info_json(self) -> bytes:
        """``/info`` on the stream port."""
        fields: list[tuple[str, int | str]] = [
            ("cam_name", self.cam_name),
            ("rotate", str(self.rotate)),
            ("stream_url", self.stream_url),
        ]
        return _json_fields(fields)

    def control(self, query: str | None) -> int:
        """``/control?var=...&val=...``: the HTTP status answered, or 0 for none (``reboot``).

        As in the firmware: 404 without ``var`` or ``val``, 500 for an unknown variable (which
        ``lamp`` and ``autolamp`` are on a board without a lamp) or a refused value.
        """
        var = query_value(query, "var")
        val_text = query_value(query, "val")
        if var is None or val_text is None:
            return 404
        value = atoi(val_text)
        result = 0
        if var in SENSOR_VARS:
            result = self.sensor.set(var, value)
        elif var == "xclk":
            self.xclk = value
        elif var == "rotate":
            self.rotate = value
        elif var == "min_frame_time":
            self.min_frame_time = value
        elif var == "autolamp" and self.has_lamp:
            self.autolamp = bool(value)
        elif var == "lamp" and self.has_lamp:
            self.lamp = max(0, min(100, value))
        elif var in ("save_prefs", "clear_prefs"):
            pass
        elif var == "reboot":
            self.reboots += 1
            self.controls.append((var, value))
            return 0
        else:
            result = -1
        if result != 0:
            return 500
        self.controls.append((var, value))
        return 200

    @property
    def min_frame_seconds(self) -> float:
        """``min_frame_time`` in seconds (0 when not positive)."""
        return max(0, self.min_frame_time) / 1000


_INDEX_HTML = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ESP32 camera (emulated)</title></head>
<body><h1>Emulated ESP32 camera</h1>
<p><img id="stream" alt="stream"></p>
<script>
document.getElementById('stream').src =
  location.protocol + '//' + location.hostname + ':' + STREAM_PORT + STREAM_PATH;
</script></body></html>
"""


def _page(stream_port: int | None, stream_path: str) -> bytes:
    port = str(stream_port) if stream_port is not None else "location.port"
    return _INDEX_HTML.replace(b"STREAM_PORT", port.encode()).replace(
        b"STREAM_PATH", f"'{stream_path}'".encode()
    )


def _png(size: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


Route = Callable[[Exchange], None]


def route(exchange: Exchange, routes: dict[str, Route]) -> None:
    """Dispatch like ESP-IDF: exact path match, GET only; 404 or 405 and close otherwise."""
    handler = routes.get(exchange.request.path)
    if handler is None:
        exchange.send_error(404)
        exchange.finish(close=True)
    elif exchange.request.method != "GET":
        exchange.send_error(405)
        exchange.finish(close=True)
    else:
        handler(exchange)


class _EspFirmwareServer(HttpCameraServer):
    """What both firmwares' servers share: two single-task servers and the capture flow."""

    camera: CameraWebServer | Esp32CamWebserver

    def __init__(self, reactor: Any, *, fps: float = 15.0, **common: Any) -> None:
        super().__init__(reactor, **common)
        if not fps > 0:
            raise ValueError(f"fps must be positive, not {fps!r}")
        self.fps = fps
        self.control = self.add_server("control", self._control, single_task=True)
        self.stream = self.add_server("stream", self._stream, single_task=True)

    def _control(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def _stream(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def _empty_ok(self, exchange: Exchange) -> None:
        exchange.set_header("Access-Control-Allow-Origin", "*")
        exchange.send()
        exchange.finish()

    def _answer_status(self, exchange: Exchange, status: int) -> None:
        """Answer a handler's result: empty 200, 500 (connection kept), or 404 (closed)."""
        if status == 200:
            self._empty_ok(exchange)
        elif status == 500:
            exchange.send_error(500)
            exchange.finish()
        else:
            exchange.send_error(404)
            exchange.finish(close=True)

    def _json(self, exchange: Exchange, body: bytes) -> None:
        exchange.content_type = "application/json"
        exchange.set_header("Access-Control-Allow-Origin", "*")
        exchange.send(body)
        exchange.finish()

    def _capture(self, exchange: Exchange, *, timestamp: bool) -> None:
        delay = self.camera.begin_capture()
        stamp = self.uptime()

        def grab() -> None:
            jpeg = self.camera.end_capture()
            self.changed()
            if not exchange.open:
                return
            exchange.set_header("Content-Disposition", "inline; filename=capture.jpg")
            exchange.set_header("Access-Control-Allow-Origin", "*")
            if timestamp:
                exchange.set_header("X-Timestamp", _timestamp(stamp + delay))
            self.send_jpeg("control", exchange, jpeg)

        self.timer(delay, grab)

    def _frame_interval(self) -> float:
        return 1.0 / self.fps


def _timestamp(seconds: float) -> str:
    """``%ld.%06ld`` of a ``timeval``."""
    whole, micros = divmod(round(seconds * 1_000_000), 1_000_000)
    return f"{whole}.{micros:06d}"


class Esp32CameraServer(_EspFirmwareServer):
    """Espressif's ``CameraWebServer`` on its two servers, ``control`` and ``stream``.

    ``camera`` is the :class:`CameraWebServer` model (a default one otherwise); ``fps`` the
    frame rate of the stream (the real camera goes as fast as its sensor: 10-25 fps at QVGA).
    The other keywords are :class:`~camproxy.democam.httpcam.HttpCameraServer`'s.
    """

    camera: CameraWebServer

    def __init__(self, reactor: Any, camera: CameraWebServer | None = None, **knobs: Any) -> None:
        super().__init__(reactor, **knobs)
        self.camera = camera if camera is not None else CameraWebServer()
        if self.camera.now is None:
            self.camera.now = reactor.seconds
        self._control_routes: dict[str, Route] = {
            "/": self._index,
            "/status": lambda e: self._json(e, self.camera.status_json()),
            "/control": self._command,
            "/capture": lambda e: self._capture(e, timestamp=True),
            "/bmp": self._bmp,
            "/xclk": lambda e: self._answer_status(e, self.camera.set_xclk(e.request.query)),
            "/reg": lambda e: self._answer_status(e, self.camera.set_reg(e.request.query)),
            "/greg": self._greg,
            "/pll": lambda e: self._answer_status(e, self.camera.needs_query(e.request.query)),
            "/resolution": lambda e: self._answer_status(
                e, self.camera.needs_query(e.request.query)
            ),
        }

    def _control(self, exchange: Exchange) -> None:
        route(exchange, self._control_routes)

    def _stream(self, exchange: Exchange) -> None:
        route(exchange, {"/stream": self._start_stream})

    def _index(self, exchange: Exchange) -> None:
        port = getattr(self.address("stream"), "port", None) if "stream" in self.ports else None
        exchange.set_header("Content-Encoding", "gzip")
        exchange.send(gzip.compress(_page(port, "/stream"), mtime=0))
        exchange.finish()

    def _command(self, exchange: Exchange) -> None:
        status = self.camera.control(exchange.request.query)
        self.changed()
        self._answer_status(exchange, status)

    def _greg(self, exchange: Exchange) -> None:
        status, body = self.camera.get_reg(exchange.request.query)
        if status != 200:
            self._answer_status(exchange, status)
            return
        exchange.set_header("Access-Control-Allow-Origin", "*")
        exchange.send(body)
        exchange.finish()

    def _bmp(self, exchange: Exchange) -> None:
        image = Image.open(io.BytesIO(self.camera.picture()))
        out = io.BytesIO()
        image.save(out, format="BMP")
        exchange.content_type = "image/x-windows-bmp"
        exchange.set_header("Content-Disposition", "inline; filename=capture.bmp")
        exchange.set_header("Access-Control-Allow-Origin", "*")
        exchange.set_header("X-Timestamp", _timestamp(self.uptime()))
        exchange.send(out.getvalue())
        exchange.finish()

    def _start_stream(self, exchange: Exchange) -> None:
        self.camera.stream_started()
        self.start_stream(
            exchange,
            STOCK_STREAM,
            self.camera.picture,
            interval=self._frame_interval,
            timestamps=True,
            on_end=self.camera.stream_ended,
        )


class Esp32CamWebserverServer(_EspFirmwareServer):
    """easytarget's ``esp32-cam-webserver`` on its two servers, ``control`` and ``stream``.

    ``camera`` is the :class:`Esp32CamWebserver` model; ``fps`` caps the stream's frame rate
    (``min_frame_time`` may slow it further); ``stream_start_delay`` is the pause before a
    stream's head (the firmware blinks its status LED twice first, about 225 ms);
    ``reboot_seconds`` how long ``/control?var=reboot`` takes to drop every connection (its
    watchdog fires after 3 s); ``stream_paths`` where the stream is served (4.x: ``/`` only,
    so ``/stream`` is a 404; releases before 3.0 served ``/stream``).
    """

    camera: Esp32CamWebserver

    def __init__(
        self,
        reactor: Any,
        camera: Esp32CamWebserver | None = None,
        *,
        stream_start_delay: float = 0.225,
        reboot_seconds: float = 3.0,
        stream_paths: tuple[str, ...] = ("/",),
        **knobs: Any,
    ) -> None:
        super().__init__(reactor, **knobs)
        self.camera = camera if camera is not None else Esp32CamWebserver()
        if self.camera.now is None:
            self.camera.now = reactor.seconds
        self.stream_start_delay = stream_start_delay
        self.reboot_seconds = reboot_seconds
        favicons: dict[str, Route] = {
            "/favicon-16x16.png": lambda e: self._asset(e, "image/png", _png(16)),
            "/favicon-32x32.png": lambda e: self._asset(e, "image/png", _png(32)),
            "/favicon.ico": lambda e: self._asset(e, "image/x-icon", _png(16)),
        }
        self._control_routes: dict[str, Route] = {
            "/": self._index,
            "/status": lambda e: self._json(e, self.camera.status_json()),
            "/control": self._command,
            "/capture": lambda e: self._capture(e, timestamp=False),
            "/style.css": lambda e: self._asset(e, "text/css", b"body{font-family:sans-serif}"),
            "/logo.svg": lambda e: self._asset(e, "image/svg+xml", _LOGO),
            "/dump": self._dump,
            "/stop": self._stop_streams,
            **favicons,
        }
        self._stream_routes: dict[str, Route] = {
            "/info": lambda e: self._json(e, self.camera.info_json()),
            "/view": lambda e: self._asset(e, "text/html", _page(None, stream_paths[0])),
            **favicons,
        }
        for path in stream_paths:
            self._stream_routes[path] = self._start_stream

    async def listen(self, descriptions: dict[str, str]) -> None:
        await super().listen(descriptions)
        if "stream" in self.ports and self.camera.stream_url == "Undefined":
            self.camera.stream_url = self.url("stream", "/")

    def _control(self, exchange: Exchange) -> None:
        route(exchange, self._control_routes)

    def _stream(self, exchange: Exchange) -> None:
        route(exchange, self._stream_routes)

    def _asset(self, exchange: Exchange, content_type: str, body: bytes) -> None:
        exchange.content_type = content_type
        exchange.set_header("Content-Encoding", "identity")
        exchange.send(body)
        exchange.finish()

    def _index(self, exchange: Exchange) -> None:
        query = exchange.request.query
        view = "full" if not query else query_value(query, "view")
        if view not in ("full", "simple", "portal"):
            exchange.send_error(404)
            exchange.finish(close=True)
            return
        port = getattr(self.address("stream"), "port", None) if "stream" in self.ports else None
        self._asset(exchange, "text/html", _page(port, "/"))

    def _dump(self, exchange: Exchange) -> None:
        camera = self.camera
        body = (
            '<html><head><meta charset="utf-8"><title>Status</title></head><body>\n'
            f"<h1>{camera.cam_name}</h1>\n"
            f"Firmware: {camera.code_ver} (base: {CAM_WEBSERVER_VERSION})<br>\n"
            f"Active streams: {camera.stream_count}, Previous streams: "
            f"{camera.streams_served}, Images captured: {camera.images_served}<br>\n"
            "</body></html>\n"
        )
        self._asset(exchange, "text/html", body.encode("utf-8"))

    def _command(self, exchange: Exchange) -> None:
        status = self.camera.control(exchange.request.query)
        self.changed()
        if status == 0:
            # The firmware never answers: it blinks until its watchdog reboots it 3 s later.
            self.timer(self.reboot_seconds, self.drop_all)
            return
        self._answer_status(exchange, status)

    def _stop_streams(self, exchange: Exchange) -> None:
        for session in list(self.sessions):
            session.stop()
        self._empty_ok(exchange)

    def _frame_interval(self) -> float:
        return max(1.0 / self.fps, self.camera.min_frame_seconds)

    def _start_stream(self, exchange: Exchange) -> None:
        self.camera.stream_started()
        self.start_stream(
            exchange,
            CAM_WEBSERVER_STREAM,
            self.camera.picture,
            interval=self._frame_interval,
            start_delay=self.stream_start_delay,
            on_end=self.camera.stream_ended,
        )


_LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    b'<circle cx="16" cy="16" r="12" fill="#c33"/></svg>'
)

_TCP_PORT = re.compile(r"^(tcp6?|ssl):(port=)?([0-9]+)(?=:|$)")


def next_port_endpoint(description: str) -> str | None:
    """The same endpoint string one port higher (``tcp:80:...`` -> ``tcp:81:...``).

    Port 0 stays 0 (any free port). None when the string names no TCP port first.
    """
    match = _TCP_PORT.match(description)
    if match is None:
        return None
    number = int(match.group(3))
    following = number + 1 if number else 0
    return f"{match.group(1)}:{match.group(2) or ''}{following}{description[match.end() :]}"


async def _listen(server: HttpCameraServer, control: str, stream: str | None) -> HttpCameraServer:
    stream = stream if stream is not None else next_port_endpoint(control)
    if stream is None:
        raise ValueError(f"no stream endpoint given, and {control!r} names no TCP port")
    await server.listen({"control": control, "stream": stream})
    return server


def listen_esp32_camera(
    reactor: Any,
    control_endpoint: str = "tcp:80",
    stream_endpoint: str | None = None,
    **knobs: Any,
) -> Deferred[Esp32CameraServer]:
    """Run Espressif's ``CameraWebServer``: control and stream servers on two endpoints.

    ``stream_endpoint`` defaults to the control port + 1 (``tcp:0`` stays ``tcp:0``: any free
    port). ``knobs`` are :class:`Esp32CameraServer`'s keywords: ``camera``, ``fps``,
    ``fault``, ``fault_scope``, ``stall_after``, ``close_after``, ``slow_seconds``,
    ``user``, ``password``, ``send_timeout``. Stop it with ``await server.stop()``.
    """
    server = Esp32CameraServer(reactor, **knobs)
    return Deferred.fromCoroutine(_listen(server, control_endpoint, stream_endpoint)).addCallback(
        lambda _: server
    )


def listen_esp32_cam_webserver(
    reactor: Any,
    control_endpoint: str = "tcp:80",
    stream_endpoint: str | None = None,
    **knobs: Any,
) -> Deferred[Esp32CamWebserverServer]:
    """Run easytarget's ``esp32-cam-webserver``, like :func:`listen_esp32_camera`.

    Extra knobs: ``stream_start_delay``, ``reboot_seconds``, ``stream_paths``; ``camera`` is
    an :class:`Esp32CamWebserver`.
    """
    server = Esp32CamWebserverServer(reactor, **knobs)
    return Deferred.fromCoroutine(_listen(server, control_endpoint, stream_endpoint)).addCallback(
        lambda _: server
    )
