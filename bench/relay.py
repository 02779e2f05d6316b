"""The floor: a bare relay from the camera emulator to N WebSocket sockets, with no logic.

It connects to the camera (a hand-made WebSocket handshake), reads each binary frame,
builds its WebSocket header once, and writes header + payload (one ``bytes``, built once
per frame) to every connected socket. Viewers get a hand-answered upgrade (a correct
``Sec-WebSocket-Accept``, no cookie, no Origin check, no hello, no events) and nothing
but frames; what they send is discarded. No backpressure, no per-viewer state, no
logging: whatever this costs per delivered frame is what any Python process on this
machine pays to push the bytes through the kernel, so it is the floor CamProxy is
compared against.

With ``--poll-fps`` it also asks ``getframe`` (for an emulator in ``getframe`` mode),
one outstanding, ``1/fps`` after the previous frame arrived.

With ``--tls-cert``/``--tls-key`` the viewers connect over TLS (the event loop's own TLS:
the floor for a Python process that encrypts).

The viewer sockets have the event loop's defaults (asyncio and uvloop set ``TCP_NODELAY``);
``--notsent-lowat`` and ``--nagle`` give them the daemon's options instead (it sets
``TCP_NOTSENT_LOWAT`` = 64 KiB, and Twisted leaves Nagle's algorithm on), to tell what
those cost the kernel.

Prints ``READY port`` once it listens and is connected to the camera.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import ssl
import sys
from typing import cast

import benchlib as wl

#: ``socket.TCP_NOTSENT_LOWAT`` where Python knows it; 25 is its number on Linux.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


class Relay:
    def __init__(self, poll_fps: float, nagle: bool = False, notsent_lowat: int = 0) -> None:
        self.nagle = nagle
        self.notsent_lowat = notsent_lowat
        self.viewers: set[asyncio.Transport] = set()
        self.poll_interval = 1.0 / poll_fps if poll_fps > 0 else 0.0
        self.camera: CameraSide | None = None
        self.frames = 0

    def relay(self, payload: bytes) -> None:
        message = wl.frame_header(wl.OP_BINARY, len(payload)) + payload
        for transport in self.viewers:
            transport.write(message)
        self.frames += 1
        if self.poll_interval and self.camera is not None:
            asyncio.get_running_loop().call_later(self.poll_interval, self.camera.getframe)


class CameraSide(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, relay: Relay, port: int, ready: asyncio.Future[None]) -> None:
        self.relay = relay
        self.port = port
        self.ready = ready
        self.open = False
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(wl.upgrade_request("127.0.0.1", self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"camera closed: {exc}"))
        print("relay: camera connection lost", file=sys.stderr)

    def getframe(self) -> None:
        self.transport.write(wl.client_frame(wl.OP_TEXT, b"getframe"))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:end]).decode("latin-1")))
                return
            del buf[: end + 4]
            self.open = True
            self.ready.set_result(None)
            if self.relay.poll_interval:
                self.getframe()
        while len(buf) >= 2:
            length, at = buf[1] & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, at = (buf[2] << 8) | buf[3], 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + length:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[at : at + length])
            del buf[: at + length]
            if opcode == wl.OP_BINARY:
                self.relay.relay(payload)
            elif opcode == wl.OP_PING:
                self.transport.write(wl.client_frame(wl.OP_PONG, payload))


class ViewerSide(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.request = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if self.relay.nagle:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        if self.relay.notsent_lowat:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, self.relay.notsent_lowat)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return  # after the upgrade: discard
        self.request += data
        end = self.request.find(b"\r\n\r\n")
        if end < 0:
            return
        _, headers = wl.parse_http_head(self.request[:end])
        self.transport.write(wl.switching_protocols(headers["sec-websocket-key"].encode()))
        self.upgraded = True
        self.request = b""
        self.relay.viewers.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.viewers.discard(self.transport)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(args.poll_fps, args.nagle, args.notsent_lowat)
    ready: asyncio.Future[None] = loop.create_future()
    _, camera = await loop.create_connection(
        lambda: CameraSide(relay, args.camera_port, ready), "127.0.0.1", args.camera_port
    )
    relay.camera = camera
    await asyncio.wait_for(ready, timeout=10)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = await loop.create_server(
        lambda: ViewerSide(relay), "127.0.0.1", args.port, backlog=1024, ssl=tls
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except TimeoutError:
        print("relay: --max-seconds reached, exiting", file=sys.stderr)
    server.close()
    for transport in list(relay.viewers):
        transport.abort()
    camera.transport.abort()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camera-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--poll-fps", type=float, default=0.0, help="0: rely on pushed frames")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this")
    parser.add_argument("--tls-cert", help="serve the viewers over TLS with this PEM certificate")
    parser.add_argument("--tls-key", help="... and this PEM private key")
    parser.add_argument(
        "--notsent-lowat", type=int, default=0, help="TCP_NOTSENT_LOWAT of the viewer sockets"
    )
    parser.add_argument(
        "--nagle", action="store_true", help="leave Nagle's algorithm on (no TCP_NODELAY)"
    )
    args = parser.parse_args(argv)
    wl.raise_nofile(4096)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
