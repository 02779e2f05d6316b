"""The viewer protocol without sockets: Autobahn's in-memory agent against one viewer factory
whose hub runs on a fake clock and whose gate admits whoever the test says."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest_twisted
from autobahn.twisted.testing import (
    MemoryReactorClockResolver,
    create_memory_agent,
    create_pumper,
)
from autobahn.twisted.websocket import WebSocketClientProtocol
from autobahn.websocket.protocol import ConnectionRequest
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from camproxy.hub.events import CloseReason
from camproxy.hub.hub import CameraHub
from camproxy.viewers.websocket import Admission, IHandshakeGate, ViewerFactory, forbidden
from tests.fakes import JPEG, FakeSource


@implementer(IHandshakeGate)
@attrs.define
class FixedGate:
    """Admits with ``admission``, or refuses (403) when it is None."""

    admission: Admission | None

    def admit(self, request: ConnectionRequest, secure: bool, peer: str) -> Deferred[Admission]:
        if self.admission is None:
            raise forbidden("login required")
        return succeed(self.admission)


class Browser(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.frames: list[bytes] = []
        self.closed: Deferred[int | None] = Deferred()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.frames.append(payload)
        else:
            self.events.append(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback(code)


@attrs.define
class Scene:
    clock: Clock
    hub: CameraHub
    source: FakeSource
    factory: ViewerFactory
    agent: Any
    pumper: Any

    async def browser(self) -> Browser:
        opened: Browser = await self.agent.open("ws://localhost/ws", {}, protocol_class=Browser)
        return opened


@pytest_twisted.async_yield_fixture
async def scene(reactor: Any) -> AsyncIterator[Scene]:
    clock = Clock()
    hub = CameraHub(clock, max_fps=10, idle_close=30, name="garden")
    source = FakeSource(hub)
    hub.start(source)
    admission = Admission(principal="p", user="alice", is_admin=False, access="control")
    factory = ViewerFactory(
        hub,
        FixedGate(admission),
        clock,
        camera_fields=lambda: {"camera": "garden", "title": "Garden", "kind": "robocam"},
        reactor=clock,
    )
    pumper = create_pumper()
    pumper.start()
    agent = create_memory_agent(
        MemoryReactorClockResolver(), pumper, lambda: factory.buildProtocol(None)
    )
    yield Scene(clock, hub, source, factory, agent, pumper)
    hub.stop()
    await pumper.stop()


async def until(scene: Scene, condition: Any) -> None:
    """Let the pumper move the in-memory bytes until ``condition()`` holds (bounded)."""
    from twisted.internet import reactor

    for _ in range(100):
        if condition():
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    assert condition()


def deliver(scene: Scene) -> None:
    """Move what is buffered in memory now (between frames on the fake clock)."""
    scene.pumper._flush()


@pytest_twisted.ensureDeferred
async def test_hello_then_frames_and_events(scene: Scene) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    hello = browser.events[0]
    assert hello["type"] == "hello" and hello["user"] == "alice"
    assert (hello["camera"], hello["access"], hello["control"]) == ("garden", "control", "shared")
    assert hello["capabilities"] == {"pan_tilt": True, "light": True}
    scene.hub.frame_received(JPEG)
    await until(scene, lambda: browser.frames)
    assert browser.frames == [JPEG]
    browser.sendMessage(b'{"type":"servo_command","command":"left"}')
    await until(scene, lambda: "move:left" in scene.source.sent)
    browser.sendMessage(b'{"type":"servo_command","command":"sideways"}')
    await until(scene, lambda: any(e["type"] == "error" for e in browser.events))


@pytest_twisted.ensureDeferred
async def test_a_tile_at_two_fps_and_a_paused_one(scene: Scene) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    browser.sendMessage(b'{"type":"set_fps","fps":2}')
    deliver(scene)
    for _ in range(25):  # one second of a 25 fps camera
        scene.hub.frame_received(JPEG)
        scene.clock.advance(0.04)
        deliver(scene)
    assert 2 <= len(browser.frames) <= 3
    browser.sendMessage(b'{"type":"set_fps","fps":0}')
    deliver(scene)
    before = len(browser.frames)
    for _ in range(25):
        scene.hub.frame_received(JPEG)
        scene.clock.advance(0.04)
        deliver(scene)
    assert len(browser.frames) == before


@pytest_twisted.ensureDeferred
async def test_closing_for_a_reason_sends_its_code(scene: Scene) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    (viewer,) = scene.factory.viewers
    viewer.close(CloseReason.SESSION_ENDED)
    await until(scene, lambda: browser.closed.called)
    assert browser.closed.result == 4001
    assert scene.hub.local_viewer_count == 0


@pytest_twisted.ensureDeferred
async def test_no_frame_follows_the_close_frame(scene: Scene) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    scene.hub.frame_received(JPEG)
    await until(scene, lambda: browser.frames)
    (viewer,) = scene.factory.viewers
    frames = viewer.frames
    assert frames is not None and frames.open
    viewer.close(CloseReason.GOING_AWAY)  # the close frame goes out; the socket stays
    assert not frames.open
    scene.hub.frame_received(JPEG)
    await until(scene, lambda: browser.closed.called)
    assert browser.frames == [JPEG]


@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_gets_no_frame(scene: Scene) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    (viewer,) = scene.factory.viewers
    frames = viewer.frames
    assert frames is not None
    viewer.dropConnection(abort=True)
    assert not frames.open
    scene.hub.frame_received(JPEG)
    await until(scene, lambda: browser.closed.called)
    assert browser.frames == []


@pytest_twisted.ensureDeferred
async def test_what_autobahn_writes_makes_the_frame_path_look_at_twisted_again(
    scene: Scene,
) -> None:
    browser = await scene.browser()
    await until(scene, lambda: browser.events)
    (viewer,) = scene.factory.viewers
    frames = viewer.frames
    assert frames is not None
    frames.held = False
    viewer.sendMessage(b'{"type":"x"}', isBinary=False)
    assert frames.held
