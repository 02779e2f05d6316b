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

On SIGTERM/SIGINT it writes a JSON log (every frame it produced, with its send time and
how many clients it was sent to or dropped for) to ``--log`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any, cast

import benchlib as wl

LIMITS = '{"min_x":0,"max_x":180,"min_y":0,"max_y":90}'


class Camera:
    def __init__(self, args: argparse.Namespace) -> None:
        self.mode: str = args.mode
        self.interval = 1.0 / args.fps
        self.max_buffer: int = args.max_buffer
        self.jpegs = wl.make_jpegs(args.distinct, args.frame_bytes)
        self.clients: set[CameraClient] = set()
        self.seq = 0
        #: One entry per frame produced: [seq, t_ns, sent_to, dropped_for, pushed(1)/answer(0)].
        self.frames: list[list[int]] = []
        self.getframes = 0
        self.late_ticks = 0
        self.x, self.y = 90, 45
        self.connects = 0
        self._tick: asyncio.TimerHandle | None = None
        self._next = 0.0

    def message(self, seq: int) -> tuple[int, bytes]:
        """The WebSocket message for frame ``seq``, stamped now, and the stamp."""
        t_ns = time.time_ns()
        payload = wl.stamped(self.jpegs[seq % len(self.jpegs)], t_ns, seq)
        return t_ns, wl.frame_header(wl.OP_BINARY, len(payload)) + payload

    # -- push --------------------------------------------------------------------

    def start_pushing(self) -> None:
        if self.mode == "getframe" or self._tick is not None:
            return
        loop = asyncio.get_running_loop()
        self._next = loop.time()
        self._tick = loop.call_at(self._next, self.push)

    def stop_pushing(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def push(self) -> None:
        loop = asyncio.get_running_loop()
        open_clients = [c for c in self.clients if c.open]
        if open_clients:
            self.seq += 1
            t_ns, data = self.message(self.seq)
            sent = dropped = 0
            for client in open_clients:
                if client.transport.get_write_buffer_size() > self.max_buffer:
                    dropped += 1
                else:
                    client.transport.write(data)
                    sent += 1
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
            if client.open:
                client.send_text(text)

    def log(self) -> dict[str, Any]:
        return {
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

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.open = False
        self.buffer = bytearray()

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


async def serve(args: argparse.Namespace) -> None:
    camera = Camera(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: CameraClient(camera), "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except TimeoutError:
        print("camemu: --max-seconds reached, exiting", file=sys.stderr)
    camera.stop_pushing()
    server.close()
    for client in list(camera.clients):
        client.transport.abort()
    if args.log:
        with open(args.log, "w") as out:
            json.dump(camera.log(), out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--frame-bytes", type=int, default=30 * 1024)
    parser.add_argument("--distinct", type=int, default=8, help="different pictures in turn")
    parser.add_argument("--mode", choices=("push", "getframe", "both"), default="push")
    parser.add_argument("--max-buffer", type=int, default=1 << 20)
    parser.add_argument("--log", help="write the frame log (JSON) here on exit")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
