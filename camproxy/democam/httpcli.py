"""``python -m camproxy.democam --kind esp32|esp32-cam-webserver|mjpeg|jpeg``: an HTTP camera alone.

Each kind has its own options (``--kind esp32 --help``). Usage errors print one line and exit
with status 2; a port that cannot be listened on exits with status 1. Once listening, one line
per URL says where the camera is.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from camproxy.democam.esp32 import (
    FRAMESIZES,
    CameraWebServer,
    Esp32CameraServer,
    Esp32CamWebserver,
    Esp32CamWebserverServer,
    next_port_endpoint,
)
from camproxy.democam.httpcam import (
    FAULT_HELP,
    FAULTS,
    SCOPES,
    HttpCameraServer,
    MultipartStyle,
)
from camproxy.democam.mjpeg import (
    ESPHOME_STREAM,
    GENERIC_STREAM,
    JpegServer,
    MjpegServer,
    PatternCamera,
)
from camproxy.democam.robocam import (
    _ArgumentParser,
    _non_negative_float,
    _non_negative_int,
    _number,
    _positive_float,
    _size,
)

HTTP_KINDS = ("esp32", "esp32-cam-webserver", "mjpeg", "jpeg")

_DEFAULT_LISTEN = {
    "esp32": "tcp:80:interface=127.0.0.1",
    "esp32-cam-webserver": "tcp:80:interface=127.0.0.1",
    "mjpeg": "tcp:8080:interface=127.0.0.1",
    "jpeg": "tcp:8081:interface=127.0.0.1",
}
_DESCRIPTIONS = {
    "esp32": "Run an emulated ESP32 camera with Espressif's CameraWebServer firmware "
    "(control server on --listen, MJPEG stream at /stream on --stream-listen).",
    "esp32-cam-webserver": "Run an emulated ESP32 camera with the esp32-cam-webserver firmware "
    "(control server on --listen, MJPEG stream at / on --stream-listen).",
    "mjpeg": "Run an emulated MJPEG camera (a multipart/x-mixed-replace stream at --path).",
    "jpeg": "Run an emulated snapshot camera (one JPEG per GET at --path).",
}


def _esp_quality(text: str) -> int:
    value = int(_number(int, text))
    if not 0 <= value <= 63:
        raise argparse.ArgumentTypeError(f"not within 0..63: {text}")
    return value


def _pillow_quality(text: str) -> int:
    value = int(_number(int, text))
    if not 1 <= value <= 95:
        raise argparse.ArgumentTypeError(f"not within 1..95: {text}")
    return value


def _framesize(text: str) -> int:
    names = [name for name, _w, _h in FRAMESIZES]
    if text.upper() in names:
        return names.index(text.upper())
    value = int(_number(int, text))
    if not 0 <= value < len(FRAMESIZES):
        raise argparse.ArgumentTypeError(f"not a frame size 0..{len(FRAMESIZES) - 1}: {text}")
    return value


def _lamp(text: str) -> int:
    value = int(_number(int, text))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"not within 0..100: {text}")
    return value


def _path(text: str) -> str:
    if not text.startswith("/") or "?" in text:
        raise argparse.ArgumentTypeError(f"a path starts with / and has no query: {text}")
    return text


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or any(c in text for c in "\r\n"):
        raise argparse.ArgumentTypeError(f"not NAME:VALUE: {text}")
    return name.strip(), value.strip()


def _boundary(text: str) -> str:
    if not text or any(c in text for c in '\r\n" '):
        raise argparse.ArgumentTypeError(f"unusable boundary: {text!r}")
    return text


def build_parser(kind: str) -> argparse.ArgumentParser:
    """The option parser of one HTTP kind."""
    parser = _ArgumentParser(prog="python -m camproxy.democam", description=_DESCRIPTIONS[kind])
    parser.add_argument("--kind", choices=[kind], default=kind, help="the camera emulated")
    parser.add_argument(
        "--listen",
        default=_DEFAULT_LISTEN[kind],
        metavar="ENDPOINT",
        help="Twisted server endpoint"
        + (" of the control server" if kind.startswith("esp32") else "")
        + " (default: %(default)s)",
    )
    if kind.startswith("esp32"):
        parser.add_argument(
            "--stream-listen",
            metavar="ENDPOINT",
            help="endpoint of the stream server (default: the --listen port + 1, "
            "required when --listen is not tcp:PORT)",
        )
    if kind != "jpeg":
        parser.add_argument(
            "--fps",
            type=_positive_float,
            default=15.0,
            metavar="N",
            help="stream frames a second (default: %(default)s)",
        )
    if kind.startswith("esp32"):
        parser.add_argument(
            "--framesize",
            type=_framesize,
            metavar="N|NAME",
            help="initial frame size, 0..13 or a name such as QVGA or VGA "
            f"(default: {'QVGA' if kind == 'esp32' else 'SVGA'})",
        )
        parser.add_argument(
            "--quality", type=_esp_quality, metavar="Q", help="JPEG quality 0 (best)..63"
        )
    else:
        parser.add_argument(
            "--size", type=_size, default=(320, 240), metavar="WxH", help="frame size (320x240)"
        )
        parser.add_argument(
            "--quality",
            type=_pillow_quality,
            default=70,
            metavar="Q",
            help="JPEG quality 1..95 (default: 70)",
        )
        parser.add_argument(
            "--path", type=_path, default="/", help="path of the camera (default: /)"
        )
        parser.add_argument(
            "--single-client",
            action="store_true",
            help="answer one request at a time (others wait), like ESPHome",
        )
    if kind == "esp32":
        parser.add_argument(
            "--led-intensity", type=int, default=0, metavar="N", help="initial led_intensity"
        )
        parser.add_argument(
            "--no-led", action="store_true", help="a build without the LED illuminator"
        )
    if kind == "esp32-cam-webserver":
        parser.add_argument("--lamp", type=_lamp, default=0, metavar="N", help="lamp 0..100")
        parser.add_argument("--no-lamp", action="store_true", help="a board without a lamp")
        parser.add_argument("--autolamp", action="store_true", help="lamp only while in use")
        parser.add_argument(
            "--min-frame-time", type=_non_negative_int, default=0, metavar="MS", help="(ms)"
        )
        parser.add_argument(
            "--stream-path",
            type=_path,
            action="append",
            metavar="PATH",
            help="where the stream port serves the stream (repeatable; default: / as 4.x "
            "does; add /stream for releases before 3.0)",
        )
        parser.add_argument(
            "--stream-start-delay",
            type=_non_negative_float,
            default=0.225,
            metavar="SECONDS",
            help="pause before a stream starts (default: %(default)s)",
        )
    if kind == "mjpeg":
        parser.add_argument(
            "--esphome",
            action="store_true",
            help="ESPHome's framing: HTTP/1.0, not chunked, boundary after each part",
        )
        parser.add_argument(
            "--boundary", type=_boundary, metavar="TEXT", help="the part boundary (frame)"
        )
        parser.add_argument(
            "--quote-boundary", action="store_true", help='announce boundary="TEXT"'
        )
        parser.add_argument("--space", action="store_true", help="a space after the ;")
        parser.add_argument(
            "--no-space",
            action="store_true",
            help="no space after the ; (as --esphome)",
        )
        parser.add_argument(
            "--no-content-length", action="store_true", help="parts without Content-Length"
        )
        parser.add_argument(
            "--part-header",
            type=_header,
            action="append",
            default=[],
            metavar="NAME:VALUE",
            help="an extra header in every part (repeatable)",
        )
        parser.add_argument(
            "--not-chunked", action="store_true", help="HTTP/1.0, the body ends with the connection"
        )
        parser.add_argument(
            "--boundary-after", action="store_true", help="each part followed by the boundary"
        )
    parser.add_argument(
        "--fault",
        choices=FAULTS,
        metavar="NAME",
        help="misbehave: " + "; ".join(f"{name}: {what}" for name, what in FAULT_HELP.items()),
    )
    parser.add_argument(
        "--fault-scope",
        choices=SCOPES,
        default="auto",
        help="which server the fault hits (auto: video faults the video, others all)",
    )
    parser.add_argument(
        "--stall-after",
        type=_non_negative_int,
        default=2,
        metavar="FRAMES",
        help="frames a stream sends before the stall fault (default: %(default)s)",
    )
    parser.add_argument(
        "--close-after",
        type=_non_negative_int,
        default=3,
        metavar="FRAMES",
        help="frames a stream sends before the close fault (default: %(default)s)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=_non_negative_float,
        default=3.0,
        metavar="S",
        help="delay of the slow fault (default: %(default)s)",
    )
    parser.add_argument("--user", help="require HTTP Basic authentication with this user")
    parser.add_argument("--password", help="... and this password")
    return parser


def parse_args(kind: str, argv: list[str]) -> argparse.Namespace:
    """Parse one kind's options; usage errors exit with status 2 and one line."""
    parser = build_parser(kind)
    args = parser.parse_args(argv)
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if kind.startswith("esp32") and args.stream_listen is None:
        args.stream_listen = next_port_endpoint(args.listen)
        if args.stream_listen is None:
            parser.error(
                f"--stream-listen is required when --listen is not tcp:PORT ({args.listen})"
            )
    return args


def _style(args: argparse.Namespace) -> MultipartStyle:
    base = ESPHOME_STREAM if args.esphome else GENERIC_STREAM
    return MultipartStyle(
        boundary=args.boundary or base.boundary,
        quote=base.quote or args.quote_boundary,
        space=(base.space or args.space) and not args.no_space,
        chunked=base.chunked and not args.not_chunked,
        boundary_first=base.boundary_first and not args.boundary_after,
        leading_crlf=base.leading_crlf,
        content_length=not args.no_content_length,
        part_headers=tuple(args.part_header),
        headers=base.headers,
    )


def build_camera(reactor: Any, args: argparse.Namespace) -> HttpCameraServer:
    """The camera server the parsed options describe (not listening yet)."""
    common: dict[str, Any] = {
        "fault": args.fault,
        "fault_scope": args.fault_scope,
        "stall_after": args.stall_after,
        "close_after": args.close_after,
        "slow_seconds": args.slow_seconds,
        "user": args.user,
        "password": args.password,
    }
    if args.kind == "esp32":
        camera = CameraWebServer(
            now=reactor.seconds, led_illuminator=not args.no_led, led_duty=args.led_intensity
        )
        _sensor_options(camera, args)
        return Esp32CameraServer(reactor, camera, fps=args.fps, **common)
    if args.kind == "esp32-cam-webserver":
        webserver = Esp32CamWebserver(
            now=reactor.seconds,
            lamp=-1 if args.no_lamp else args.lamp,
            autolamp=args.autolamp,
            min_frame_time=args.min_frame_time,
        )
        _sensor_options(webserver, args)
        return Esp32CamWebserverServer(
            reactor,
            webserver,
            fps=args.fps,
            stream_start_delay=args.stream_start_delay,
            stream_paths=tuple(args.stream_path or ["/"]),
            **common,
        )
    pattern = PatternCamera(
        now=reactor.seconds, width=args.size[0], height=args.size[1], quality=args.quality
    )
    if args.kind == "mjpeg":
        return MjpegServer(
            reactor,
            pattern,
            path=args.path,
            style=_style(args),
            fps=args.fps,
            single_client=args.single_client,
            **common,
        )
    return JpegServer(reactor, pattern, path=args.path, single_client=args.single_client, **common)


def _sensor_options(camera: CameraWebServer | Esp32CamWebserver, args: argparse.Namespace) -> None:
    if args.framesize is not None:
        camera.sensor.framesize = args.framesize
    if args.quality is not None:
        camera.sensor.quality = args.quality


def endpoints(args: argparse.Namespace) -> dict[str, str]:
    """Endpoint strings by role."""
    if args.kind.startswith("esp32"):
        return {"control": args.listen, "stream": args.stream_listen}
    return {("stream" if args.kind == "mjpeg" else "snapshot"): args.listen}


def describe(server: HttpCameraServer, kind: str, args: argparse.Namespace) -> list[str]:
    """One line per URL of a listening camera."""
    where: dict[str, str] = {}
    for role in server.ports:
        address = server.address(role)
        name = getattr(address, "name", None)
        if getattr(address, "port", None) is None and name is not None:
            shown = name.decode() if isinstance(name, bytes) else str(name)
            where[role] = f" (UNIX socket {shown})"
        else:
            where[role] = ""
    if kind == "esp32":
        return [
            f"ESP32 CameraWebServer control at {server.url('control', '/')}{where['control']} "
            "(/status, /control?var=led_intensity&val=N, /capture)",
            f"ESP32 CameraWebServer stream at {server.url('stream', '/stream')}{where['stream']}",
        ]
    if kind == "esp32-cam-webserver":
        paths = args.stream_path or ["/"]
        return [
            f"esp32-cam-webserver control at {server.url('control', '/')}{where['control']} "
            "(/status, /control?var=lamp&val=N, /capture)",
            *(
                f"esp32-cam-webserver stream at {server.url('stream', path)}{where['stream']}"
                for path in paths
            ),
        ]
    role = "stream" if kind == "mjpeg" else "snapshot"
    noun = "MJPEG stream" if kind == "mjpeg" else "JPEG snapshots"
    return [f"Demo {noun} at {server.url(role, args.path)}{where[role]}"]


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    log = Logger(namespace="camproxy.democam")
    server = build_camera(reactor, args)
    try:
        await server.listen(endpoints(args))
    except Exception as error:
        log.error("Cannot listen: {error}", error=error)
        raise SystemExit(1) from None
    for line in describe(server, args.kind, args):
        log.info("{line}", line=line)
    if server.auth is not None:
        log.info("HTTP Basic authentication required (user {user})", user=server.auth.user)
    if args.fault is not None:
        log.info("Fault: {fault} ({what})", fault=args.fault, what=FAULT_HELP[args.fault])
    await Deferred()


def main(kind: str, argv: list[str]) -> None:
    """Run an emulated HTTP camera of ``kind`` until interrupted, logging to standard output."""
    from twisted.internet import reactor
    from twisted.internet.task import react
    from twisted.logger import globalLogBeginner, textFileLogObserver

    args = parse_args(kind, argv)
    for role, description in endpoints(args).items():
        try:
            serverFromString(reactor, description)
        except (ValueError, KeyError, TypeError) as error:
            option = (
                "--stream-listen" if role == "stream" and kind.startswith("esp32") else "--listen"
            )
            print(
                f"democam: error: bad {option} endpoint {description!r}: {error}", file=sys.stderr
            )
            raise SystemExit(2) from None
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    react(lambda reactor: Deferred.fromCoroutine(_serve(reactor, args)))
