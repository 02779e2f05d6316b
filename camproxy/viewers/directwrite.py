"""Writing a frame to an idle TCP socket at once, instead of on the next reactor turn.

Twisted buffers every ``write`` and sends it when epoll says the socket is writable:
two ``epoll_ctl`` calls and a wake-up per write. For hundreds of viewers, each frame
written to each of them, that round trip was about a quarter of the daemon's CPU (see
bench/RESULTS.md). When nothing is queued for the socket we send right away and hand
Twisted only what the kernel did not take, so ordering, backpressure (pause/resume) and
error handling stay Twisted's. The WebSocket viewer's frame path
(``camproxy.viewers.websocket.ViewerFrames``) does this with the socket's ``send`` from
:func:`socket_send`, after :func:`idle` said Twisted holds nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import tcp


def socket_send(transport: Any) -> Callable[[bytes], int] | None:
    """The ``send`` of a plain TCP transport's socket, to write to it directly when
    :func:`idle`; None for any other transport (TLS, UNIX sockets, tests' fakes)."""
    if type(transport) is tcp.Server:
        send: Callable[[bytes], int] = transport.socket.send
        return send
    return None


def idle(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP transport, open, with nothing queued: then
    bytes sent on its socket now cannot overtake bytes Twisted still holds."""
    return bool(
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and len(transport.dataBuffer) == transport.offset
    )
