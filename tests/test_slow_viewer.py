"""A viewer that stops reading skips frames; it neither slows others nor grows memory."""

from __future__ import annotations

import base64
import os
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import task, threads

from camproxy.web.auth import SESSION_COOKIE
from tests.wsclient import close_viewer


def open_stalled_viewer(port: int, cookie: str) -> socket.socket:
    """A raw WebSocket client with a tiny receive window that never reads after the handshake."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nCookie: {cookie}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def buffered_bytes(transport: Any) -> int:
    """What Twisted holds for a TCP transport, not yet handed to the kernel."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_stalled_viewer_skips_frames_and_others_keep_full_rate(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any
) -> None:
    camera = await demo_camera_factory(push_frames=False)
    daemon = await daemon_factory(camera_url=camera.url, max_fps=25)
    fast = await daemon.viewer()
    await fast.wait_frames(3)
    cookie = f"{SESSION_COOKIE}={await daemon.session('slow')}"
    stalled = await threads.deferToThread(open_stalled_viewer, daemon.port, cookie)
    try:
        await fast.wait_for(lambda v: daemon.hub.viewer_count == 2)
        (slow_protocol,) = [
            v
            for v in daemon.viewers.viewers
            if v.transport.getPeer().port == stalled.getsockname()[1]
        ]
        received_before = daemon.hub.stats.frames_received
        fast_before = len(fast.frames)
        peak_buffer = 0
        for _ in range(100):  # 10 s, sampling the server's buffer for the stalled viewer
            await task.deferLater(reactor, 0.1, lambda: None)
            peak_buffer = max(peak_buffer, buffered_bytes(slow_protocol.transport))
        camera_frames = daemon.hub.stats.frames_received - received_before
        fast_frames = len(fast.frames) - fast_before
        frame_size = len(fast.frames[-1])
        assert camera_frames >= 150  # ~25 fps for 10 s
        assert fast_frames >= camera_frames - 2
        assert slow_protocol.frames.frames_skipped > 0
        # Bounded: what Twisted buffers is at most a couple of frames, not a queue.
        assert peak_buffer <= 3 * frame_size + 65536
    finally:
        stalled.close()
    await close_viewer(fast)
