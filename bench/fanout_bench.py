"""The Python cost of the per-viewer frame path, without the kernel's.

One hub with N WebSocket viewers (real ``ViewerProtocol`` objects on real Twisted
``tcp.Server`` transports) whose sockets' ``send`` is ``len``: a C call that "sends"
everything at once. What is left is what the daemon's own code costs per viewer per
frame: the hub's fan-out, the viewer's checks and counts, the direct-write decision.
Run it against two trees to compare them (``PYTHONPATH=/other/tree``).

    .venv/bin/python bench/fanout_bench.py --viewers 200,500
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock

from camproxy.hub.hub import CameraHub
from camproxy.viewers.delivery import NewestFrameProducer
from camproxy.viewers.websocket import Admission, ViewerFactory

JPEG = b"\xff\xd8" + b"x" * 30_000 + b"\xff\xd9"


class FakeSocket:
    """Takes every byte at once, in C."""

    send = len

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1


class FakePort:
    _realPortNumber = 8080


def build(n: int) -> CameraHub:
    reactor = MemoryReactorClock()
    hub = CameraHub(reactor, max_fps=25, idle_close=0)
    factory = ViewerFactory(hub, gate=None, clock=reactor)  # type: ignore[arg-type]
    port: Any = FakePort()
    for index in range(n):
        viewer: Any = factory.buildProtocol(None)
        transport = tcp.Server(
            FakeSocket(),  # type: ignore[arg-type]
            viewer,
            ("127.0.0.1", 1024 + index),
            port,
            index,
            reactor,
        )
        viewer.transport = transport
        viewer.state = WebSocketProtocol.STATE_OPEN
        viewer.admission = Admission(principal=None, user=f"user{index}")
        if hasattr(viewer, "_start_frames"):
            viewer._start_frames()
        else:  # the code before the fast path
            viewer.frames = NewestFrameProducer(viewer._write_frame, hub.stats)
            transport.registerProducer(viewer.frames, True)
        hub._viewers.add(viewer)
    hub.connected = True
    return hub


def measure(n: int, frames: int, repeats: int) -> list[float]:
    """ns per viewer per frame, once per repeat."""
    hub = build(n)
    for _ in range(50):
        hub.frame_received(JPEG)
    found = []
    for _ in range(repeats):
        gc.collect()
        began = time.perf_counter()
        for _ in range(frames):
            hub.frame_received(JPEG)
        found.append((time.perf_counter() - began) / frames / n * 1e9)
    assert hub.stats.frames_sent == n * (50 + frames * repeats)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="200,500")
    parser.add_argument("--frames", type=int, default=500, help="frames per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for n in (int(v) for v in args.viewers.split(",")):
        found = measure(n, args.frames, args.repeats)
        print(
            f"{n} viewers: {min(found):.0f} ns per viewer per frame (best of {args.repeats};"
            f" median {sorted(found)[len(found) // 2]:.0f})"
        )


if __name__ == "__main__":
    main()
