"""Writing a frame to an idle TCP socket at once, instead of on the next reactor turn.

Twisted buffers every ``write`` and sends it when epoll says the socket is writable:
two ``epoll_ctl`` calls and a wake-up per write. For hundreds of viewers, each frame
written to each of them, that round trip was about a quarter of the daemon's CPU (see
bench/RESULTS.md). When nothing is queued for the socket we send right away, through
the transport's own ``writeSomeData``, and hand Twisted only what the kernel did not
take, so ordering, backpressure (pause/resume) and error handling stay Twisted's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def _idle_tcp(transport: Any) -> bool:
    return bool(
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and len(transport.dataBuffer) == transport.offset
    )


def write_now(transport: Any, data: bytes) -> None:
    """Like ``transport.write(data)``, but sending at once when the socket is idle."""
    if _idle_tcp(transport):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)
