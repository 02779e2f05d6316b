"""CPU cost of the MJPEG parser per frame, fed in the reads a socket gives.

Builds the byte stream Espressif's CameraWebServer writes (delimiter first, part headers
with Content-Length and X-Timestamp) and the one without Content-Length (the parser must
find each boundary), cuts it into fixed-size reads, and times ``MJPEGParser.feed`` over
them with ``time.process_time``. Best of several runs; microseconds per frame.

Then the whole source path without sockets: an ``MJPEGSource`` whose connection is a
``StringTransport``, fed the HTTP response in the same reads, chunked as the ESP32's
httpd sends it: Twisted's HTTP client and chunked decoding, the parser, the JPEG check
and the listener call.

    python bench/multipart_bench.py [--frame-bytes 30000] [--frames 2000]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from camproxy.hub.source import ISourceListener, Limits
from camproxy.sources.http import HttpSourceSettings
from camproxy.sources.httpcam import MJPEGSource
from camproxy.sources.multipart import MJPEGParser

BOUNDARY = b"123456789000000000000987654321"


def frame(size: int, rng: random.Random) -> bytes:
    """JPEG-like bytes: entropy-coded data is close to random."""
    return b"\xff\xd8" + rng.randbytes(size - 4) + b"\xff\xd9"


def stream(frames: list[bytes], *, lengths: bool) -> bytes:
    out = bytearray()
    for n, data in enumerate(frames):
        out += b"\r\n--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
        if lengths:
            out += b"Content-Length: %d\r\n" % len(data)
        out += b"X-Timestamp: %d.000000\r\n\r\n" % n + data
    out += b"\r\n--" + BOUNDARY + b"\r\n"
    return bytes(out)


def reads(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def measure(pieces: list[bytes], expected: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        count = [0]

        def on_part(_: bytes, count: list[int] = count) -> None:
            count[0] += 1

        parser = MJPEGParser(BOUNDARY, on_part)
        started = time.process_time()
        for piece in pieces:
            parser.feed(piece)
        elapsed = time.process_time() - started
        assert count[0] == expected, (count[0], expected)
        best = min(best, elapsed)
    return best / expected * 1e6


@implementer(IAgentEndpointFactory)
class _Wire:
    """Connections over a StringTransport; the benchmark plays the camera."""

    protocol: IProtocol | None = None

    def endpointForURI(self, uri: Any) -> Any:
        wire = self

        class Endpoint:
            def connect(self, factory: IProtocolFactory) -> defer.Deferred[IProtocol]:
                protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
                assert protocol is not None
                protocol.makeConnection(StringTransport())
                wire.protocol = protocol
                return defer.succeed(protocol)

        return Endpoint()


@implementer(ISourceListener)
class _Counter:
    frames = 0

    def source_connected(self) -> None:
        pass

    def source_disconnected(self) -> None:
        pass

    def frame_received(self, data: bytes) -> bool:
        self.frames += 1
        return True

    def frame_request_failed(self) -> None:
        pass

    def position_reported(self, x: int, y: int) -> None:
        pass

    def limits_reported(self, limits: Limits) -> None:
        pass

    def position_refused(self) -> None:
        pass

    def capabilities_changed(self) -> None:
        pass

    def light_reported(self, on: bool) -> None:
        pass

    def control_reported(self, holder: str | None, expires_in: float | None) -> None:
        pass


def chunked(data: bytes, chunk: int) -> bytes:
    """Chunked transfer coding, one chunk per ``chunk`` bytes (the httpd's sends)."""
    out = bytearray()
    for at in range(0, len(data), chunk):
        piece = data[at : at + chunk]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out)


def measure_source(body: bytes, size: int, expected: int, runs: int) -> float:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary="
        + BOUNDARY
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    pieces = reads(head + body, size)
    best = float("inf")
    for _ in range(runs):
        wire, counter = _Wire(), _Counter()
        settings = HttpSourceSettings("http://cam/stream", endpoint_factory=wire)
        source = MJPEGSource(Clock(), counter, settings)
        source.open()
        assert wire.protocol is not None
        receive = wire.protocol.dataReceived
        started = time.process_time()
        for piece in pieces:
            receive(piece)
        elapsed = time.process_time() - started
        source.close()
        assert counter.frames == expected, (counter.frames, expected)
        best = min(best, elapsed)
    return best / expected * 1e6


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--frame-bytes", type=int, default=30_000)
    options.add_argument("--frames", type=int, default=2000)
    options.add_argument("--runs", type=int, default=5)
    args = options.parse_args()
    rng = random.Random(7)
    frames = [frame(args.frame_bytes, rng) for _ in range(args.frames)]
    print(f"{args.frames} frames of {args.frame_bytes} bytes, best of {args.runs} runs")
    print(f"{'read size':>10} {'Content-Length':>15} {'us/frame':>9} {'MB/s':>7}")
    for lengths in (True, False):
        data = stream(frames, lengths=lengths)
        for size in (1460, 16384, 65536):
            per_frame = measure(reads(data, size), len(frames), args.runs)
            rate = args.frame_bytes / per_frame
            print(f"{size:>10} {'yes' if lengths else 'no':>15} {per_frame:>9.1f} {rate:>7.0f}")
    print()
    print("whole source path (HTTP client, chunked as the ESP32 httpd, parser, check)")
    print(f"{'read size':>10} {'us/frame':>9}")
    body = chunked(stream(frames, lengths=True), 4096)
    for size in (1460, 16384, 65536):
        per_frame = measure_source(body, size, len(frames), args.runs)
        print(f"{size:>10} {per_frame:>9.1f}")


if __name__ == "__main__":
    main()
