"""Keeping the kernel from queueing seconds of video for a slow viewer.

Linux lets a TCP socket's send buffer grow to megabytes (autotuning). A slow phone on
weak WiFi would then be fed every frame through that queue, seconds behind, while our
newest-frame rule never saw its transport busy. ``TCP_NOTSENT_LOWAT`` caps the bytes the
kernel keeps *unsent* (sent but unacknowledged data does not count): past it the socket
stops being writable, Twisted buffers, pauses the viewer's producer, and the viewer gets
the newest frame once it drains — within a frame or two of its arrival.
"""

from __future__ import annotations

import socket
from typing import Any

#: ``socket.TCP_NOTSENT_LOWAT`` where Python knows it; 25 is its number on Linux.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def limit_unsent_bytes(transport: Any, limit: int) -> bool:
    """Cap what the kernel holds unsent for this TCP (or TLS-over-TCP) transport.

    Returns whether the option was set (False for UNIX sockets and other transports).
    """
    handle = _socket_of(transport)
    if handle is None or handle.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        handle.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, limit)
    except OSError:
        return False
    return True


def _socket_of(transport: Any) -> socket.socket | None:
    # A TLS transport's handle is the OpenSSL connection; the socket is one layer down.
    for _ in range(3):
        if transport is None:
            return None
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None
