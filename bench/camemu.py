"""A fast RoboCam camera emulator for the load benchmark (asyncio, one process).

It speaks the firmware's WebSocket dialect (CONTRACT §1) just far enough for CamProxy
and the bare relay: it answers ``get_limits``, ``get_pos``, position commands and
pings, and sends pre-made VGA JPEGs of a fixed size, each stamped with its send time in
a COM segment right after SOI (see ``benchlib.stamped``).

Modes:

- ``push``: push a frame to every client at exactly ``--fps`` (an absolute schedule, no
  drift), and ignore ``getframe`` (the firmware pushes on its own timer; this is the mode
  the benchmark measures).
- ``getframe``: push nothing; answer every ``getframe`` at once. The rate is then the
  daemon's own pacing (one outstanding request, ``1/max_fps`` after the last frame).
- ``both``: both, as the firmware does.

A camera cannot queue frames forever: when a client's unsent data exceeds
``--max-buffer`` bytes, a pushed frame is dropped for that client and counted (the
ESP32's WebSocket library drops messages over its queue limit the same way).

``--kind esp32`` is Espressif's stock ``CameraWebServer`` firmware instead (kind ``esp32``
in CamProxy): ``/status`` and ``/control`` on the port printed, the MJPEG stream at
``/stream`` on the next port, pushed in push mode at ``--fps`` like the RoboCam's frames.
The bytes are the firmware's, as ``camproxy.democam`` writes them (the status JSON, the
chunked ``multipart/x-mixed-replace`` head, and per frame three chunks: the boundary,
the part headers with ``Content-Length`` and ``X-Timestamp``, the JPEG), and the JPEGs
are the same stamped ones. With ``--huge-part`` a stream, after ``--huge-after`` frames,
sends one part far over any frame limit: ``length`` announces ``--huge-bytes`` in its
``Content-Length`` and sends them, then goes on with normal frames; ``endless`` has no
``Content-Length`` and never ends (until the client goes).

``--cameras K`` runs K such cameras in the one process, each on its own port(s), their
frame times spread over the frame interval (real cameras are not in step).

Prints ``READY port ...`` (one port per camera: the WebSocket's, or the ESP32's control
port). On SIGTERM/SIGINT it writes a JSON log (every frame it produced, with its send time
and how many clients it was sent to or dropped for; with K > 1 one such log per camera
under ``cameras``) to ``--log`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any, Protocol, cast

import benchlib as wl

LIMITS = '{"min_x":0,"max_x":180,"min_y":0,"max_y":90}'
#: The ESP32's huge part goes out in chunks of this size, as fast as the client reads.
HUGE_CHUNK = 64 * 1024


class Client(Protocol):
    """What the camera pushes frames to: a RoboCam socket or an ESP32 stream."""

    open: bool
    busy: bool
    transport: asyncio.Transport

    def frame_sent(self) -> None: ...


class Camera:
    def __init__(
        self, args: argparse.Namespace, jpegs: list[bytes], index: int = 0, count: int = 1
    ) -> None:
        self.kind: str = args.kind
        self.mode: str = args.mode if args.kind == "robocam" else "push"
        self.interval = 1.0 / args.fps
        #: Where in the frame interval this camera's frames go (cameras are not in step).
        self.phase = self.interval * index / count
        self.max_buffer: int = args.max_buffer
        self.jpegs = jpegs
        self.clients: set[Client] = set()
        self.seq = 0
        #: One entry per frame produced: [seq, t_ns, sent_to, dropped_for, pushed(1)/answer(0)].
        self.frames: list[list[int]] = []
        self.getframes = 0
        self.late_ticks = 0
        self.x, self.y = 90, 45
        self.connects = 0
        self.huge_part: str = args.huge_part
        self.huge_bytes: int = args.huge_bytes
        self.huge_after: int = args.huge_after
        #: One entry per huge part: [start t_ns, end t_ns (0: never ended), bytes sent].
        self.huge_events: list[list[int]] = []
        self.booted = time.monotonic()
        self.status_json = b""
        if self.kind == "esp32":
            from camproxy.democam.esp32 import CameraWebServer

            self.status_json = CameraWebServer().status_json()
        self._tick: asyncio.TimerHandle | None = None
        self._next = 0.0

    def payload(self, seq: int) -> tuple[int, bytes]:
        """The JPEG of frame ``seq``, stamped now, and the stamp."""
        t_ns = time.time_ns()
        return t_ns, wl.stamped(self.jpegs[seq % len(self.jpegs)], t_ns, seq)

    def message(self, seq: int) -> tuple[int, bytes]:
        """The WebSocket message for frame ``seq``, stamped now, and the stamp."""
        t_ns, payload = self.payload(seq)
        return t_ns, wl.frame_header(wl.OP_BINARY, len(payload)) + payload

    def pieces(self, seq: int) -> tuple[int, list[bytes]]:
        """What goes on the wire for frame ``seq``, write by write, and the stamp: one
        WebSocket message, or the stock ESP32 firmware's three chunks of a part."""
        if self.kind == "robocam":
            t_ns, data = self.message(seq)
            return t_ns, [data]
        t_ns, payload = self.payload(seq)
        head = ESP_STREAM.part_head(len(payload), time.monotonic() - self.booted)
        return t_ns, [chunk(ESP_STREAM.delimiter()), chunk(head), chunk(payload)]

    # -- push --------------------------------------------------------------------

    def start_pushing(self) -> None:
        if self.mode == "getframe" or self._tick is not None:
            return
        loop = asyncio.get_running_loop()
        self._next = loop.time() + self.phase
        self._tick = loop.call_at(self._next, self.push)

    def stop_pushing(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def push(self) -> None:
        loop = asyncio.get_running_loop()
        open_clients = [c for c in self.clients if c.open and not c.busy]
        if open_clients:
            self.seq += 1
            t_ns, pieces = self.pieces(self.seq)
            sent = dropped = 0
            for client in open_clients:
                if client.transport.get_write_buffer_size() > self.max_buffer:
                    dropped += 1
                else:
                    for piece in pieces:
                        client.transport.write(piece)
                    sent += 1
                    client.frame_sent()
            self.frames.append([self.seq, t_ns, sent, dropped, 1])
        self._next += self.interval
        now = loop.time()
        if self._next < now - self.interval:
            # The loop stalled for more than a frame: restart the schedule, count it.
            self.late_ticks += 1
            self._next = now
        self._tick = loop.call_at(self._next, self.push)

    # -- commands ----------------------------------------------------------------

    def command(self, client: CameraClient, text: str) -> None:
        if text == "getframe":
            self.getframes += 1
            if self.mode != "push":
                self.seq += 1
                t_ns, data = self.message(self.seq)
                client.transport.write(data)
                self.frames.append([self.seq, t_ns, 1, 0, 0])
        elif text == "get_limits":
            client.send_text(LIMITS)
        elif text == "get_pos":
            client.send_text(f'{{"x":{self.x},"y":{self.y}}}')
        elif text.startswith("{"):
            try:
                target = json.loads(text)
                x, y = int(target["x"]), int(target["y"])
            except (ValueError, KeyError, TypeError):
                return
            old = (self.x, self.y)
            if 0 <= x <= 180 and 0 <= y <= 90:
                self.x, self.y = x, y
                self.broadcast(f'{{"x":{old[0]},"y":{old[1]}}}')
            else:
                client.send_text("Position out of bounds")
        elif text in ("up", "down", "left", "right", "center"):
            self.broadcast(f'{{"x":{self.x},"y":{self.y}}}')
        elif text == "client_count":
            client.send_text(f'{{"client_count":{len(self.clients)}}}')

    def broadcast(self, text: str) -> None:
        for client in self.clients:
            if client.open and isinstance(client, CameraClient):
                client.send_text(text)

    def log(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "huge_part": self.huge_part,
            "huge_events": self.huge_events,
            "mode": self.mode,
            "interval": self.interval,
            "frame_bytes": len(self.jpegs[0]) + wl.STAMP_SEGMENT_LEN,
            "frames": self.frames,
            "getframes": self.getframes,
            "late_ticks": self.late_ticks,
            "connects": self.connects,
        }


class CameraClient(asyncio.Protocol):
    """One client of the camera (the daemon or the relay)."""

    transport: asyncio.Transport
    busy = False

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.open = False
        self.buffer = bytearray()

    def frame_sent(self) -> None:
        pass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.camera.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.camera.clients.discard(self)
        self.open = False
        if not any(c.open for c in self.camera.clients):
            self.camera.stop_pushing()

    def send_text(self, text: str) -> None:
        data = text.encode()
        self.transport.write(wl.frame_header(wl.OP_TEXT, len(data)) + data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            _, headers = wl.parse_http_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            key = headers.get("sec-websocket-key")
            if not key:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            self.transport.write(wl.switching_protocols(key.encode()))
            self.open = True
            self.camera.connects += 1
            self.camera.start_pushing()
        self.parse()

    def parse(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            opcode, second = buf[0] & 0x0F, buf[1]
            length, at = second & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, at = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, at = int.from_bytes(buf[2:10], "big"), 10
            masked = second & 0x80
            mask = b""
            if masked:
                if len(buf) < at + 4:
                    return
                mask = bytes(buf[at : at + 4])
                at += 4
            if len(buf) < at + length:
                return
            payload = bytes(buf[at : at + length])
            del buf[: at + length]
            if masked:
                payload = wl.unmask(payload, mask)
            if opcode == wl.OP_TEXT:
                self.camera.command(self, payload.decode("utf-8", "replace"))
            elif opcode == wl.OP_PING:
                self.transport.write(wl.frame_header(wl.OP_PONG, len(payload)) + payload)
            elif opcode == wl.OP_CLOSE:
                self.transport.write(wl.frame_header(wl.OP_CLOSE, len(payload[:2])) + payload[:2])
                self.open = False
                self.transport.close()
                return


# -- the stock ESP32 firmware (CameraWebServer) ------------------------------------------


def _esp32_wire() -> tuple[Any, Any]:
    from camproxy.democam.httpcam import STOCK_STREAM
    from camproxy.democam.httpwire import chunk

    return STOCK_STREAM, chunk


ESP_STREAM, chunk = _esp32_wire()


def esp_head(status: str, content_type: str, framing: str, headers: list[tuple[str, str]]) -> bytes:
    """A response head as ESP-IDF's ``esp_http_server`` writes it (see
    ``camproxy.democam.httpwire``): status, type, length or chunking, the handler's
    headers, nothing else."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", framing]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpClient(asyncio.Protocol):
    """One connection to an ESP32 server: reads GET requests, one at a time."""

    transport: asyncio.Transport

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            line, _ = wl.parse_http_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            parts = line.split()
            self.request(parts[1].partition("?")[0] if len(parts) > 1 else "/")

    def request(self, path: str) -> None:
        raise NotImplementedError

    def not_found(self) -> None:
        body = b"Nothing matches the given URI"
        self.transport.write(
            esp_head("404 Not Found", "text/html", f"Content-Length: {len(body)}", []) + body
        )
        self.transport.close()


class ControlClient(HttpClient):
    """The firmware's control server: ``/status`` and ``/control``."""

    def request(self, path: str) -> None:
        cors = [("Access-Control-Allow-Origin", "*")]
        if path == "/status":
            body = self.camera.status_json
            head = esp_head("200 OK", "application/json", f"Content-Length: {len(body)}", cors)
            self.transport.write(head + body)
        elif path == "/control":
            self.transport.write(esp_head("200 OK", "text/html", "Content-Length: 0", cors))
        else:
            self.not_found()


class StreamClient(HttpClient):
    """The firmware's stream server: ``/stream``, then frames for as long as it stays."""

    def __init__(self, camera: Camera) -> None:
        super().__init__(camera)
        self.open = False
        #: True while the huge part goes out (no frames meanwhile).
        self.busy = False
        self.frames = 0
        self.paused = False
        self.huge_left = 0
        self.huge_event: list[int] | None = None

    def request(self, path: str) -> None:
        if path != "/stream" or self.open:
            self.not_found()
            return
        self.transport.write(
            esp_head(
                "200 OK", ESP_STREAM.content_type, "Transfer-Encoding: chunked", ESP_STREAM.headers
            )
        )
        self.open = True
        self.camera.clients.add(self)
        self.camera.connects += 1
        self.camera.start_pushing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.camera.clients.discard(self)
        if self.huge_event is not None:
            self.huge_event[1] = time.time_ns()
        if not any(c.open for c in self.camera.clients):
            self.camera.stop_pushing()

    def frame_sent(self) -> None:
        self.frames += 1
        camera = self.camera
        if camera.huge_part != "none" and self.frames == camera.huge_after:
            self.start_huge()

    def start_huge(self) -> None:
        """One part far over any frame limit: announced (``length``) or endless."""
        camera = self.camera
        self.busy = True
        endless = camera.huge_part == "endless"
        self.huge_left = -1 if endless else camera.huge_bytes
        head = b"Content-Type: image/jpeg\r\n"
        if not endless:
            head += b"Content-Length: %d\r\n" % camera.huge_bytes
        self.transport.write(chunk(ESP_STREAM.delimiter()) + chunk(head + b"\r\n"))
        self.huge_event = [time.time_ns(), 0, 0]
        camera.huge_events.append(self.huge_event)
        self.feed_huge(first=True)

    def feed_huge(self, first: bool = False) -> None:
        event = self.huge_event
        assert event is not None
        body = b"\x00" * HUGE_CHUNK
        while not self.paused and self.open and self.huge_left != 0:
            size = HUGE_CHUNK if self.huge_left < 0 else min(HUGE_CHUNK, self.huge_left)
            piece = body[:size]
            if first:
                piece = b"\xff\xd8" + piece[2:]  # JPEG-shaped: starts FF D8
                first = False
            if self.huge_left > 0:
                self.huge_left -= size
                if self.huge_left == 0:
                    piece = piece[:-2] + b"\xff\xd9"  # ... and ends FF D9
            self.transport.write(chunk(piece))
            event[2] += size
        if self.huge_left == 0 and self.busy:
            event[1] = time.time_ns()
            self.busy = False
            self.huge_event = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.busy:
            self.feed_huge()


async def listen_esp32(
    loop: asyncio.AbstractEventLoop, camera: Camera
) -> tuple[int, list[asyncio.Server]]:
    """The control server on a free port P and the stream server on P + 1."""
    for _ in range(100):
        control = await loop.create_server(lambda: ControlClient(camera), "127.0.0.1", 0)
        port = control.sockets[0].getsockname()[1]
        try:
            stream = await loop.create_server(lambda: StreamClient(camera), "127.0.0.1", port + 1)
        except OSError:
            control.close()
            continue
        return port, [control, stream]
    raise OSError("no two free consecutive ports")


async def serve(args: argparse.Namespace) -> None:
    jpegs = wl.make_jpegs(args.distinct, args.frame_bytes)
    cameras = [Camera(args, jpegs, index, args.cameras) for index in range(args.cameras)]
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    ports = []
    for index, camera in enumerate(cameras):
        if camera.kind == "esp32":
            port, made = await listen_esp32(loop, camera)
            servers += made
        else:
            wanted = args.port + index if args.port else 0
            server = await loop.create_server(
                lambda camera=camera: CameraClient(camera), "127.0.0.1", wanted
            )
            port = server.sockets[0].getsockname()[1]
            servers.append(server)
        ports.append(port)
    print(f"READY {' '.join(map(str, ports))}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except TimeoutError:
        print("camemu: --max-seconds reached, exiting", file=sys.stderr)
    for camera in cameras:
        camera.stop_pushing()
    for server in servers:
        server.close()
    for camera in cameras:
        for client in list(camera.clients):
            client.transport.abort()
    if args.log:
        logs = [camera.log() for camera in cameras]
        with open(args.log, "w") as out:
            json.dump(logs[0] if len(logs) == 1 else {"cameras": logs}, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--frame-bytes", type=int, default=30 * 1024)
    parser.add_argument("--distinct", type=int, default=8, help="different pictures in turn")
    parser.add_argument("--mode", choices=("push", "getframe", "both"), default="push")
    parser.add_argument(
        "--kind", choices=("robocam", "esp32"), default="robocam", help="the firmware emulated"
    )
    parser.add_argument("--cameras", type=int, default=1, help="cameras in this process")
    parser.add_argument(
        "--huge-part",
        choices=("none", "length", "endless"),
        default="none",
        help="esp32: after --huge-after frames, one part over any limit (see above)",
    )
    parser.add_argument("--huge-bytes", type=int, default=256 << 20, help="... its length")
    parser.add_argument("--huge-after", type=int, default=50, help="... after this many frames")
    parser.add_argument("--max-buffer", type=int, default=1 << 20)
    parser.add_argument("--log", help="write the frame log (JSON) here on exit")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
