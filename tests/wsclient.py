"""A WebSocket viewer for tests: connects like a browser and records what it receives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS


class RecordingViewer(WebSocketClientProtocol):
    """Collects frames and JSON events; tests wait on predicates, never on sleeps."""

    factory: RecordingFactory

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        self.opened: Deferred[RecordingViewer] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self._waiters: list[tuple[Callable[[RecordingViewer], bool], Deferred[None]]] = []
        self.handshake_status: int | None = None

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.frames.append(payload)
        else:
            self.events.append(json.loads(payload))
        self._check()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        self.closed.callback((wasClean, code, reason))
        self._check()

    def _check(self) -> None:
        for entry in list(self._waiters):
            predicate, waiter = entry
            if predicate(self):
                self._waiters.remove(entry)
                waiter.callback(None)

    def wait_for(self, predicate: Callable[[RecordingViewer], bool]) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self._waiters.append((predicate, waiter))
        self._check()
        return waiter

    def wait_frames(self, count: int) -> Deferred[None]:
        target = len(self.frames) + count
        return self.wait_for(lambda v: len(v.frames) >= target)

    def wait_event(self, kind: str, **fields: object) -> Deferred[None]:
        def seen(viewer: RecordingViewer) -> bool:
            return any(
                e.get("type") == kind and all(e.get(k) == v for k, v in fields.items())
                for e in viewer.events
            )

        return self.wait_for(seen)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def send_json(self, message: object) -> None:
        self.sendMessage(json.dumps(message).encode(), isBinary=False)


class RecordingFactory(WebSocketClientFactory):
    protocol = RecordingViewer  # type: ignore[assignment]


async def connect_viewer(
    reactor: Any,
    port: int,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/ws",
    trust: Any = None,
) -> RecordingViewer:
    """Open a viewer socket to 127.0.0.1:port (``wss://localhost`` given a trust root)."""
    url = f"wss://localhost:{port}{path}" if trust is not None else f"ws://127.0.0.1:{port}{path}"
    factory = RecordingFactory(url=url, headers=headers or {}, reactor=reactor)
    factory.setProtocolOptions(failByDrop=False, openHandshakeTimeout=10)
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if trust is not None:
        endpoint = wrapClientTLS(optionsForClientTLS("localhost", trustRoot=trust), endpoint)
    viewer = await endpoint.connect(factory)
    assert isinstance(viewer, RecordingViewer)
    return await viewer.opened


async def close_viewer(viewer: RecordingViewer) -> None:
    if not viewer.closed.called:
        viewer.sendClose(1000)
    await viewer.closed
