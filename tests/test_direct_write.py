"""The viewer's frame path on a real socket: sent at once when nothing is queued, and
Twisted's buffering, ordering, backpressure and error handling kept otherwise.

The viewer's transport is a real ``tcp.Server`` around one end of a socket pair, on a
memory reactor (so nothing is written unless the test says ``doWrite``); the test reads
the other end itself.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import main, tcp
from twisted.internet.testing import MemoryReactorClock

from camproxy.hub.frames import Frame
from camproxy.hub.hub import CameraHub
from camproxy.viewers.directwrite import idle, socket_send
from camproxy.viewers.websocket import Admission, ViewerFactory, ViewerProtocol
from tests.fakes import JPEG
from tests.test_viewer_protocol import FixedGate


class FakePort:
    _realPortNumber = 8080


class Pair:
    """A viewer writing into one end of a socket pair; the test reads the other end."""

    def __init__(self, hub: CameraHub, factory: ViewerFactory, sndbuf: int = 0) -> None:
        self.reactor = MemoryReactorClock()
        self.ours, self.theirs = socket.socketpair()
        if sndbuf:
            self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        self.theirs.setblocking(False)
        viewer = factory.buildProtocol(None)
        assert isinstance(viewer, ViewerProtocol)
        self.viewer: ViewerProtocol = viewer
        port: Any = FakePort()
        self.transport: tcp.Server = tcp.Server(
            self.ours, viewer, ("127.0.0.1", 50000), port, 1, self.reactor
        )
        self.viewer.transport = self.transport
        self.viewer.state = WebSocketProtocol.STATE_OPEN
        self.viewer.admission = Admission(principal="p", user="alice")
        self.viewer._start_frames()

    def received(self) -> bytes:
        """Everything the kernel holds for the reader now."""
        chunks = []
        while True:
            try:
                chunk = self.theirs.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def drain(self) -> bytes:
        """Read while Twisted writes what it holds (and a pending frame once resumed)."""
        received = b""
        for _ in range(10_000):
            received += self.received()
            producer = self.viewer.frames
            if not self.buffered() and producer is not None and not producer.paused:
                return received + self.received()
            assert self.transport.doWrite() is None
        raise AssertionError("never drained")

    def buffered(self) -> int:
        transport = self.transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def scene() -> Iterator[tuple[CameraHub, ViewerFactory, list[Pair]]]:
    clock = MemoryReactorClock()
    hub = CameraHub(clock, max_fps=25, idle_close=0)
    factory = ViewerFactory(hub, FixedGate(None), clock)
    pairs: list[Pair] = []
    yield hub, factory, pairs
    for pair in pairs:
        pair.close()


def message(factory: ViewerFactory, data: bytes) -> bytes:
    """The bytes of one binary WebSocket message carrying ``data``."""
    return factory.frame_bytes(Frame(data, 0, 0.0))


def frame(data: bytes, sequence: int, at: float = 0.0) -> Frame:
    return Frame(data, sequence, at)


def test_an_idle_socket_gets_the_frame_at_once(scene: Any) -> None:
    hub, factory, pairs = scene
    pair = Pair(hub, factory)
    pairs.append(pair)
    assert socket_send(pair.transport) is not None and idle(pair.transport)
    pair.viewer.frame_sink.send_frame(frame(JPEG, 1))
    # No reactor turn, no epoll registration: the bytes are in the kernel already.
    assert pair.received() == message(factory, JPEG)
    assert pair.buffered() == 0 and pair.transport not in pair.reactor.getWriters()
    assert pair.viewer.frames is not None and pair.viewer.frames.frames_sent == 1
    assert hub.stats.frames_sent == 1


def test_what_the_kernel_does_not_take_waits_in_twisted_in_order(scene: Any) -> None:
    hub, factory, pairs = scene
    pair = Pair(hub, factory, sndbuf=4096)
    pairs.append(pair)
    big = [JPEG[:2] + bytes([n]) * 200_000 + JPEG[-2:] for n in range(3)]
    pair.viewer.frame_sink.send_frame(frame(big[0], 1))
    # Partly sent, the rest handed to Twisted, which now writes when epoll says so.
    assert 0 < pair.buffered() < len(message(factory, big[0]))
    assert pair.transport in pair.reactor.getWriters()
    # Past Twisted's buffer size the producer is paused: the next frames wait (newest only).
    producer = pair.viewer.frames
    assert producer is not None and producer.paused
    pair.viewer.frame_sink.send_frame(frame(big[1], 2))
    pair.viewer.frame_sink.send_frame(frame(big[2], 3))
    assert producer.frames_skipped == 1 and hub.stats.frames_skipped == 1
    received = pair.drain()
    assert received == message(factory, big[0]) + message(factory, big[2])
    assert producer.frames_sent == 2 and hub.stats.frames_sent == 2


def test_a_frame_after_a_partial_write_never_overtakes_it(scene: Any) -> None:
    hub, factory, pairs = scene
    pair = Pair(hub, factory, sndbuf=4096)
    pairs.append(pair)
    first = JPEG[:2] + b"a" * 30_000 + JPEG[-2:]
    second = JPEG[:2] + b"b" * 30_000 + JPEG[-2:]
    pair.viewer.frame_sink.send_frame(frame(first, 1))
    assert pair.buffered() > 0
    producer = pair.viewer.frames
    assert producer is not None and not producer.paused  # under Twisted's buffer size
    # The reader empties the kernel's buffer, so send() would take more now; but Twisted
    # still holds the rest of the first frame: the second goes behind it, not to send().
    received = pair.received()
    pair.viewer.frame_sink.send_frame(frame(second, 2))
    received += pair.drain()
    assert received == message(factory, first) + message(factory, second)


def test_a_broken_connection_is_left_to_twisted(scene: Any) -> None:
    hub, factory, pairs = scene
    pair = Pair(hub, factory)
    pairs.append(pair)
    pair.theirs.close()
    pair.viewer.frame_sink.send_frame(frame(JPEG, 1))  # EPIPE: no exception reaches the hub
    assert pair.buffered() == len(message(factory, JPEG))
    assert pair.transport.doWrite() is main.CONNECTION_LOST


def test_the_fps_cap_and_a_closed_frame_path_skip_the_write(scene: Any) -> None:
    hub, factory, pairs = scene
    pair = Pair(hub, factory)
    pairs.append(pair)
    pair.viewer._set_frame_rate(5)
    for n in range(10):  # 0.4 s of a 25 fps camera: frames at 0, 0.2 (and not 0.36)
        pair.viewer.frame_sink.send_frame(frame(JPEG, n + 1, n * 0.04))
    assert pair.received() == message(factory, JPEG) * 2
    frames = pair.viewer.frames
    assert frames is not None
    frames.open = False  # what the protocol does as it leaves the open state
    pair.viewer.frame_sink.send_frame(frame(JPEG, 20, 5.0))
    assert pair.received() == b""
    assert hub.stats.frames_sent == 2
