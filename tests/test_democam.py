"""Tests for the emulated RoboCam camera: the model, the push timer, and a loopback server."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
import treq
from autobahn.exception import Disconnected
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageStat
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock

from camproxy.democam.robocam import (
    CLI_FAULTS,
    FAULTS,
    HUGE_FRAME_BYTES,
    JUNK_JSON,
    OUT_OF_BOUNDS,
    DemoCamera,
    DemoCameraFactory,
    DemoCameraProtocol,
    Reply,
    _factory_knobs,
    _parse_args,
    listen_black_hole,
    listen_demo_camera,
    main,
)
from camproxy.democam.testpattern import PatternRenderer, clock_text


def _is_jpeg(data: bytes) -> bool:
    return data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _small_camera(**kw: Any) -> DemoCamera:
    return DemoCamera(width=160, height=120, **kw)


# --- the model -------------------------------------------------------------------------------


def test_defaults_match_config_template() -> None:
    camera = DemoCamera()
    assert camera.handle("get_pos") == [Reply("sender", '{"x":90,"y":45}')]
    assert camera.handle("get_limits") == [
        Reply("sender", '{"min_x":0,"max_x":180,"min_y":0,"max_y":90}')
    ]
    assert camera.light is False


def test_custom_limits_are_reported() -> None:
    camera = DemoCamera(min_x=10, max_x=170, min_y=5, max_y=120, start_x=20, start_y=30)
    assert camera.handle("get_limits") == [
        Reply("sender", '{"min_x":10,"max_x":170,"min_y":5,"max_y":120}')
    ]
    assert camera.handle("get_pos") == [Reply("sender", '{"x":20,"y":30}')]


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        DemoCamera(min_x=100, max_x=0)
    with pytest.raises(ValueError):
        DemoCamera(start_y=91)


@pytest.mark.parametrize(
    ("command", "expected"),
    [("up", (90, 35)), ("down", (90, 55)), ("left", (100, 45)), ("right", (80, 45))],
)
def test_directions_move_ten_degrees_and_tell_everyone(
    command: str, expected: tuple[int, int]
) -> None:
    camera = DemoCamera()
    x, y = expected
    assert camera.handle(command) == [Reply("all", f'{{"x":{x},"y":{y}}}')]
    assert (camera.x, camera.y) == expected


@pytest.mark.parametrize(
    ("start", "command", "expected"),
    [
        ((90, 5), "up", (90, 0)),
        ((90, 0), "up", (90, 0)),
        ((90, 85), "down", (90, 90)),
        ((175, 45), "left", (180, 45)),
        ((180, 45), "left", (180, 45)),
        ((3, 45), "right", (0, 45)),
    ],
)
def test_directions_clamp_to_limits(
    start: tuple[int, int], command: str, expected: tuple[int, int]
) -> None:
    camera = DemoCamera(x=start[0], y=start[1])
    x, y = expected
    assert camera.handle(command) == [Reply("all", f'{{"x":{x},"y":{y}}}')]


def test_center_returns_to_start() -> None:
    camera = DemoCamera(x=0, y=90)
    assert camera.handle("center") == [Reply("all", '{"x":90,"y":45}')]
    assert (camera.x, camera.y) == (90, 45)


def test_absolute_move_reports_the_old_position_to_all() -> None:
    camera = DemoCamera()
    assert camera.handle('{"x":10,"y":80}') == [Reply("all", '{"x":90,"y":45}')]
    assert camera.handle("get_pos") == [Reply("sender", '{"x":10,"y":80}')]
    assert camera.handle('{"y":0,"x":180}') == [Reply("all", '{"x":10,"y":80}')]
    assert (camera.x, camera.y) == (180, 0)


@pytest.mark.parametrize("position", [(0, 0), (180, 90), (0, 90), (180, 0)])
def test_absolute_move_accepts_the_limits_themselves(position: tuple[int, int]) -> None:
    camera = DemoCamera()
    camera.handle(json.dumps({"x": position[0], "y": position[1]}))
    assert (camera.x, camera.y) == position


@pytest.mark.parametrize(
    "message",
    ['{"x":-1,"y":45}', '{"x":181,"y":45}', '{"x":90,"y":-1}', '{"x":90,"y":91}'],
)
def test_absolute_move_out_of_bounds_tells_the_sender_only(message: str) -> None:
    camera = DemoCamera()
    assert camera.handle(message) == [Reply("sender", OUT_OF_BOUNDS)]
    assert OUT_OF_BOUNDS == "Position out of bounds"
    assert (camera.x, camera.y) == (90, 45)


@pytest.mark.parametrize(
    "message",
    [
        '{"x":90.0,"y":45}',
        '{"x":90,"y":45.5}',
        '{"x":1e1,"y":45}',
        '{"x":true,"y":45}',
        '{"x":"90","y":45}',
        '{"x":null,"y":45}',
        '{"x":[90],"y":45}',
        '{"x":90}',
        '{"y":45}',
        "{}",
        '{"x":4294967296,"y":45}',
        '{"x":90,"y":45',
        "{not json",
        "{",
        '[{"x":90,"y":45}]',
        ' {"x":10,"y":10}',
        '"x"',
    ],
)
def test_malformed_or_non_integer_positions_get_no_answer(message: str) -> None:
    camera = DemoCamera()
    assert camera.handle(message) == []
    assert (camera.x, camera.y) == (90, 45)


def test_trailing_text_after_the_json_object_is_ignored_like_arduinojson() -> None:
    camera = DemoCamera()
    assert camera.handle('{"x":10,"y":20} trailing') == [Reply("all", '{"x":90,"y":45}')]
    assert (camera.x, camera.y) == (10, 20)


def test_extra_fields_are_ignored() -> None:
    camera = DemoCamera()
    camera.handle('{"x":10,"y":20,"speed":"fast"}')
    assert (camera.x, camera.y) == (10, 20)


def test_client_count_answers_the_cameras_own_count() -> None:
    camera = DemoCamera(client_count=3)
    assert camera.handle("client_count") == [Reply("sender", '{"client_count":3}')]


def test_light_commands_change_state_without_answer() -> None:
    camera = DemoCamera()
    assert camera.handle("light_on") == []
    assert camera.light is True
    assert camera.handle("light_on") == []
    assert camera.light is True
    assert camera.handle("light_off") == []
    assert camera.light is False


@pytest.mark.parametrize(
    "message", ["", "UP", "up ", " get_pos", "getframe\n", "hello", "light", "get_position"]
)
def test_unknown_commands_get_no_answer(message: str) -> None:
    camera = DemoCamera()
    assert camera.handle(message) == []
    assert (camera.x, camera.y, camera.light) == (90, 45, False)


def test_getframe_answers_a_jpeg_to_the_sender() -> None:
    camera = _small_camera()
    [reply] = camera.handle("getframe")
    assert reply.to == "sender"
    assert isinstance(reply.payload, bytes)
    assert _is_jpeg(reply.payload)
    assert _image(reply.payload).size == (160, 120)


def test_frame_source_replaces_the_picture_and_none_means_no_answer() -> None:
    camera = DemoCamera(frame_source=lambda: b"garbage")
    assert camera.handle("getframe") == [Reply("sender", b"garbage")]
    camera.frame_source = lambda: None
    assert camera.handle("getframe") == []


@given(st.lists(st.sampled_from(["up", "down", "left", "right", "center"]), max_size=40))
def test_directions_never_leave_the_limits(commands: list[str]) -> None:
    camera = DemoCamera()
    for command in commands:
        [reply] = camera.handle(command)
        assert reply.payload == f'{{"x":{camera.x},"y":{camera.y}}}'
        assert camera.in_limits(camera.x, camera.y)


# --- the picture -----------------------------------------------------------------------------


def test_frames_are_valid_jpegs_of_the_configured_size() -> None:
    renderer = PatternRenderer(width=320, height=240, quality=60)
    frame = renderer.render(90, 45, True, 0.0)
    assert _is_jpeg(frame)
    image = _image(frame)
    assert image.format == "JPEG"
    assert image.size == (320, 240)


def test_default_frame_is_vga_of_plausible_size() -> None:
    frame = DemoCamera().capture()
    assert frame is not None
    assert _image(frame).size == (640, 480)
    assert 10_000 < len(frame) < 60_000


def test_view_follows_pan_and_tilt() -> None:
    renderer = PatternRenderer(width=160, height=120)
    assert renderer.window(100, 45)[0] < renderer.window(90, 45)[0]  # left pans left
    assert renderer.window(90, 35)[1] < renderer.window(90, 45)[1]  # up tilts up
    assert renderer.window(180, 0) == (0, 0)


def test_clock_and_light_show_on_the_frame() -> None:
    renderer = PatternRenderer(width=160, height=120)
    assert renderer.render(90, 45, True, 1.0) != renderer.render(90, 45, True, 2.0)
    lit = ImageStat.Stat(_image(renderer.render(90, 45, True, 0.0)).convert("L")).mean[0]
    dark = ImageStat.Stat(_image(renderer.render(90, 45, False, 0.0)).convert("L")).mean[0]
    assert lit > dark * 1.5


def test_clock_text_has_milliseconds() -> None:
    text = clock_text(1_700_000_000.25)
    assert len(text) == 12
    assert text[2] == text[5] == ":"
    assert text.endswith(".250")


# --- the factory, with a fake clock and fake clients -----------------------------------------


class FakeClient:
    """Records what the factory sends to one client."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.frames: list[bytes] = []
        self.closed = False
        self.dropped = False

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        if isBinary:
            self.frames.append(payload)
        else:
            self.texts.append(payload.decode())

    def sendClose(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = True

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped = abort


def _fake_factory(clock: Clock, **knobs: Any) -> DemoCameraFactory:
    counter = iter(range(1_000_000))
    return DemoCameraFactory(
        clock, frame_source=lambda: b"\xff\xd8%d\xff\xd9" % next(counter), **knobs
    )


def test_frames_are_pushed_only_while_someone_is_connected() -> None:
    clock = Clock()
    factory = _fake_factory(clock, frame_interval=0.2)
    assert clock.getDelayedCalls() == []
    first, second = FakeClient(), FakeClient()
    factory.client_opened(first)
    assert first.texts == ['{"client_count":1}']
    assert len(first.frames) == 1  # the firmware sends one as soon as it has a client
    clock.advance(0.1)
    assert len(first.frames) == 1
    clock.advance(0.1)
    assert len(first.frames) == 2
    factory.client_opened(second)
    assert first.texts[-1] == second.texts[-1] == '{"client_count":2}'
    clock.advance(0.2)
    assert first.frames[-1] == second.frames[-1]
    factory.client_closed(first)
    assert second.texts[-1] == '{"client_count":1}'
    factory.client_closed(second)
    assert clock.getDelayedCalls() == []
    clock.advance(1.0)
    assert len(second.frames) == 1


def test_push_frames_off_and_interval_changes() -> None:
    clock = Clock()
    factory = _fake_factory(clock, push_frames=False)
    client = FakeClient()
    factory.client_opened(client)
    assert clock.getDelayedCalls() == []
    factory.push_frames = True
    assert len(client.frames) == 1
    factory.frame_interval = 1.0
    clock.advance(0.5)
    assert len(client.frames) == 1
    clock.advance(0.5)
    assert len(client.frames) == 2
    with pytest.raises(ValueError):
        factory.frame_interval = 0
    factory.push_frames = False
    assert clock.getDelayedCalls() == []


def test_failed_capture_sends_nothing() -> None:
    clock = Clock()
    factory = DemoCameraFactory(clock, frame_source=lambda: None)
    client = FakeClient()
    factory.client_opened(client)
    factory.message_received(client, b"getframe", False)
    clock.advance(1.0)
    assert client.frames == []


def test_getframe_and_get_pos_answer_the_sender_moves_tell_all() -> None:
    clock = Clock()
    factory = _fake_factory(clock, push_frames=False)
    first, second = FakeClient(), FakeClient()
    factory.client_opened(first)
    factory.client_opened(second)
    factory.message_received(first, b"getframe", False)
    assert len(first.frames) == 1
    assert second.frames == []
    factory.message_received(second, b"get_pos", False)
    assert second.texts[-1] == '{"x":90,"y":45}'
    assert first.texts[-1] == '{"client_count":2}'
    factory.message_received(second, b"left", False)
    assert first.texts[-1] == second.texts[-1] == '{"x":100,"y":45}'
    factory.message_received(first, b"client_count", False)
    assert first.texts[-1] == '{"client_count":2}'
    assert factory.received == ["getframe", "get_pos", "left", "client_count"]


def test_getframe_can_be_ignored_or_delayed() -> None:
    clock = Clock()
    factory = _fake_factory(clock, push_frames=False, answer_getframe=False)
    client = FakeClient()
    factory.client_opened(client)
    factory.message_received(client, b"getframe", False)
    assert client.frames == []
    assert factory.received == ["getframe"]

    factory.answer_getframe = True
    factory.getframe_delay = 0.5
    factory.message_received(client, b"getframe", False)
    clock.advance(0.4)
    assert client.frames == []
    clock.advance(0.1)
    assert len(client.frames) == 1

    factory.message_received(client, b"getframe", False)
    factory.client_closed(client)
    assert clock.getDelayedCalls() == []


def test_binary_messages_are_handled_like_text_but_recorded_apart() -> None:
    clock = Clock()
    factory = _fake_factory(clock, push_frames=False)
    client = FakeClient()
    factory.client_opened(client)
    factory.message_received(client, b"get_pos", True)
    assert client.texts[-1] == '{"x":90,"y":45}'
    assert factory.received == []
    assert factory.received_binary == [b"get_pos"]


def test_client_limit_closes_the_extra_client() -> None:
    clock = Clock()
    factory = _fake_factory(clock, client_limit=2)
    clients = [FakeClient() for _ in range(3)]
    for client in clients:
        factory.client_opened(client)
    assert [c.closed for c in clients] == [False, False, True]
    assert factory.clients == tuple(clients[:2])
    assert clients[2].texts == []
    assert clients[2].frames == []
    factory.message_received(clients[2], b"get_pos", False)
    assert clients[2].texts == []
    factory.client_closed(clients[2])
    assert clients[0].texts[-1] == '{"client_count":2}'
    assert factory.camera.client_count == 2


def test_drop_all_and_when_clients() -> None:
    clock = Clock()
    factory = _fake_factory(clock)
    fired: list[int] = []
    factory.when_clients(2).addCallback(lambda _: fired.append(2))
    first, second = FakeClient(), FakeClient()
    factory.client_opened(first)
    factory.client_opened(second)
    assert fired == [2]
    factory.drop_all()
    assert first.dropped and second.dropped
    factory.drop_all(clean=True)
    assert first.closed and second.closed
    factory.when_clients(0).addCallback(lambda _: fired.append(0))
    factory.client_closed(first)
    factory.client_closed(second)
    factory.client_closed(FakeClient())  # never opened: ignored
    assert fired == [2, 0]
    assert clock.getDelayedCalls() == []


# --- fault injection -----------------------------------------------------------------------


class WireClient(FakeClient):
    """Records every message as sent, bytes and all; can refuse to send like a closing socket."""

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[tuple[bytes, bool]] = []
        self.closing = False

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        if self.closing:
            raise Disconnected("Attempt to send on a closed protocol")
        self.wire.append((payload, isBinary))


FAKE_JPEG = b"\xff\xd8" + b"\x01" * 100 + b"\xff\xd9"


def _jpeg_factory(clock: Clock, **knobs: Any) -> DemoCameraFactory:
    return DemoCameraFactory(clock, frame_source=lambda: FAKE_JPEG, **knobs)


def _sent_after_connect(client: WireClient) -> list[tuple[bytes, bool]]:
    return [(p, b) for p, b in client.wire if p != b'{"client_count":1}']


@pytest.mark.parametrize("fault", ["truncated", "not-jpeg"])
def test_frame_faults_replace_every_frame_pushed_or_requested(fault: str) -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, fault=fault)
    client = WireClient()
    factory.client_opened(client)  # pushes one at once
    factory.message_received(client, b"getframe", False)
    clock.advance(0.15)
    sent = _sent_after_connect(client)
    assert len(sent) == 3 and factory.faults_sent == 3
    assert all(binary and not _is_jpeg(payload) for payload, binary in sent)
    factory.fault = None
    factory.message_received(client, b"getframe", False)
    assert _is_jpeg(client.wire[-1][0])
    factory.client_closed(client)


def test_huge_fault_sends_each_client_one_huge_frame() -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, push_frames=False)
    first, second = WireClient(), WireClient()
    factory.client_opened(first)
    factory.fault = "huge"
    factory.message_received(first, b"getframe", False)
    factory.message_received(first, b"getframe", False)
    huge, normal = first.wire[-2][0], first.wire[-1][0]
    assert len(huge) == HUGE_FRAME_BYTES and _is_jpeg(huge)
    assert len(normal) == 104
    factory.client_opened(second)
    factory.message_received(second, b"getframe", False)
    assert len(second.wire[-1][0]) == HUGE_FRAME_BYTES
    assert factory.faults_sent == 2


@pytest.mark.parametrize("fault", ["bad-utf8", "junk-json"])
def test_text_faults_go_before_every_frame(fault: str) -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, push_frames=False, fault=fault)
    client = WireClient()
    factory.client_opened(client)
    for _ in range(len(JUNK_JSON)):
        factory.message_received(client, b"getframe", False)
    sent = _sent_after_connect(client)
    texts = [payload for payload, binary in sent if not binary]
    frames = [payload for payload, binary in sent if binary]
    assert len(texts) == len(frames) == len(JUNK_JSON)
    assert all(_is_jpeg(frame) for frame in frames)
    if fault == "bad-utf8":
        with pytest.raises(UnicodeDecodeError):
            texts[0].decode("utf-8")
    else:
        assert {t.decode() for t in texts} == set(JUNK_JSON)


def test_unknown_faults_and_intervals_are_refused() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="unknown fault"):
        _jpeg_factory(clock, fault="gremlins")
    factory = _jpeg_factory(clock)
    with pytest.raises(ValueError):
        factory.fault = "gremlins"
    with pytest.raises(ValueError):
        factory.flap_interval = 0


def test_flapping_drops_every_client_each_interval_while_any_is_connected() -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, push_frames=False, flap_interval=1.0)
    assert clock.getDelayedCalls() == []
    client = FakeClient()
    factory.client_opened(client)
    clock.advance(0.9)
    assert not client.dropped
    clock.advance(0.1)
    assert client.dropped
    factory.client_closed(client)
    assert clock.getDelayedCalls() == []
    again = FakeClient()
    factory.client_opened(again)
    factory.flap_interval = None
    clock.advance(5.0)
    assert not again.dropped
    assert clock.getDelayedCalls() == []


def test_half_open_sends_nothing_and_swallows_pings() -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, half_open=True)
    client = WireClient()
    factory.client_opened(client)
    factory.message_received(client, b"get_pos", False)
    factory.message_received(client, b"getframe", False)
    clock.advance(1.0)
    assert client.wire == []
    assert factory.received == ["get_pos", "getframe"]

    pongs: list[bytes] = []
    protocol = DemoCameraProtocol()
    protocol.factory = factory
    protocol.state = protocol.STATE_OPEN
    protocol.sendPong = pongs.append  # type: ignore[method-assign,assignment]
    protocol.onPing(b"ping")
    assert pongs == []
    factory.half_open = False
    protocol.onPing(b"ping")
    assert pongs == [b"ping"]
    factory.client_closed(client)


def test_a_closing_client_does_not_stop_the_push_loop() -> None:
    clock = Clock()
    factory = _jpeg_factory(clock, frame_interval=0.1)
    closing, healthy = WireClient(), WireClient()
    factory.client_opened(closing)
    factory.client_opened(healthy)
    closing.closing = True
    clock.pump([0.1] * 3)
    assert sum(binary for _, binary in healthy.wire) == 3
    factory.client_closed(closing)
    factory.client_closed(healthy)
    assert clock.getDelayedCalls() == []


# --- a real server on loopback ---------------------------------------------------------------


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Client(WebSocketClientProtocol):
    """A test client that records messages and lets a test wait for a condition."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.frames: list[bytes] = []
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.frames.append(payload)
        else:
            self.texts.append(payload.decode())
        waiting, self._waiters = self._waiters, []
        for condition, waiter in waiting:
            if condition():
                waiter.callback(None)
            else:
                self._waiters.append((condition, waiter))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback(code)

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        if condition():
            return
        waiter: Deferred[None] = Deferred()
        self._waiters.append((condition, waiter))
        await waiter.addTimeout(timeout, _reactor())

    async def close(self) -> None:
        if not self.closed.called:
            self.sendClose()
        await self.closed.addTimeout(5.0, _reactor())


async def _connect(port: int) -> Client:
    reactor = _reactor()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws", reactor=reactor)
    factory.protocol = Client
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client: Client = await endpoint.connect(factory)
    await client.opened.addTimeout(5.0, reactor)
    return client


async def _serve(**knobs: Any) -> tuple[Any, DemoCameraFactory, int]:
    port: Any
    port, factory = await listen_demo_camera(_reactor(), "tcp:0:interface=127.0.0.1", **knobs)
    return port, factory, port.getHost().port


async def _shutdown(port: Any, factory: DemoCameraFactory, clients: list[Client]) -> None:
    for client in clients:
        await client.close()
    await factory.when_clients(0).addTimeout(5.0, _reactor())
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_pushed_frames_arrive_at_the_interval() -> None:
    reactor = _reactor()
    port, factory, number = await _serve(frame_interval=0.05)
    client = await _connect(number)
    try:
        await client.until(lambda: len(client.frames) >= 1)
        start = reactor.seconds()
        await client.until(lambda: len(client.frames) >= 9)
        elapsed = reactor.seconds() - start
        assert 0.3 <= elapsed <= 3.0
        for frame in client.frames:
            assert _is_jpeg(frame)
            assert _image(frame).size == (640, 480)
        assert client.texts[0] == '{"client_count":1}'
    finally:
        await _shutdown(port, factory, [client])


@pytest_twisted.ensureDeferred
async def test_getframe_answers_only_the_sender_and_broadcasts_client_count() -> None:
    port, factory, number = await _serve(push_frames=False)
    first = await _connect(number)
    clients = [first]
    try:
        await first.until(lambda: first.texts == ['{"client_count":1}'])
        second = await _connect(number)
        clients.append(second)
        await first.until(lambda: first.texts[-1:] == ['{"client_count":2}'])
        first.sendMessage(b"getframe")
        await first.until(lambda: len(first.frames) == 1)
        assert _is_jpeg(first.frames[0])
        # Anything sent to the second client before its own answer would arrive first.
        second.sendMessage(b"get_pos")
        await second.until(lambda: second.texts[-1:] == ['{"x":90,"y":45}'])
        assert second.frames == []
        await second.close()
        await first.until(lambda: first.texts[-1:] == ['{"client_count":1}'])
        assert factory.received == ["getframe", "get_pos"]
    finally:
        await _shutdown(port, factory, clients)


@pytest_twisted.ensureDeferred
async def test_the_sixth_client_is_closed() -> None:
    port, factory, number = await _serve(push_frames=False)
    clients = [await _connect(number) for _ in range(5)]
    try:
        extra = await _connect(number)
        clients.append(extra)
        await extra.closed.addTimeout(5.0, _reactor())
        assert len(factory.clients) == 5
        await clients[0].until(lambda: clients[0].texts[-1:] == ['{"client_count":5}'])
        clients[0].sendMessage(b"client_count")
        await clients[0].until(lambda: len(clients[0].texts) == 7)
        assert clients[0].texts[-1] == '{"client_count":5}'
    finally:
        await _shutdown(port, factory, clients)


@pytest_twisted.ensureDeferred
async def test_the_picture_changes_after_left() -> None:
    camera = DemoCamera(now=lambda: 0.0)
    port, factory, number = await _serve(push_frames=False, camera=camera)
    client = await _connect(number)
    try:
        client.sendMessage(b"getframe")
        client.sendMessage(b"getframe")
        await client.until(lambda: len(client.frames) == 2)
        client.sendMessage(b"left")
        await client.until(lambda: client.texts[-1:] == ['{"x":100,"y":45}'])
        client.sendMessage(b"getframe")
        await client.until(lambda: len(client.frames) == 3)
        before, again, after = (_image(frame).convert("RGB") for frame in client.frames)
        assert ImageChops.difference(before, again).getbbox() is None
        # Below the text bar, so the position text alone cannot make the difference.
        box = (0, 100, 640, 480)
        assert ImageChops.difference(before.crop(box), after.crop(box)).getbbox() is not None
    finally:
        await _shutdown(port, factory, [client])


@pytest_twisted.ensureDeferred
async def test_drop_all_disconnects_clients() -> None:
    port, factory, number = await _serve(push_frames=False)
    client = await _connect(number)
    try:
        await factory.when_clients(1)
        factory.drop_all()
        code = await client.closed.addTimeout(5.0, _reactor())
        assert code == 1006
    finally:
        await _shutdown(port, factory, [client])


@pytest_twisted.ensureDeferred
async def test_index_page_is_served() -> None:
    port, _factory, number = await _serve()
    try:
        response = await treq.get(f"http://127.0.0.1:{number}/", persistent=False)
        assert response.code == 200
        assert b"/ws" in await response.content()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_black_hole_accepts_and_never_answers() -> None:
    reactor = _reactor()
    port, hole = await listen_black_hole(reactor, "tcp:0:interface=127.0.0.1")
    number: int = port.getHost().port  # type: ignore[attr-defined]
    try:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{number}/ws", reactor=reactor)
        factory.protocol = Client
        factory.setProtocolOptions(openHandshakeTimeout=1.0)
        endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", number)
        client: Client = await endpoint.connect(factory)
        await client.closed.addTimeout(5.0, reactor)  # the handshake timed out
        assert not client.opened.called
        assert hole.accepted == 1 and hole.bytes_received > 0
    finally:
        hole.drop_all()
        await defer.maybeDeferred(port.stopListening)


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--frame-interval", "0"],
        ["--frame-interval", "fast"],
        ["--client-limit", "-1"],
        ["--size", "640"],
        ["--quality", "100"],
        ["--bogus"],
        ["--listen", "nonsense:1"],
        ["--fault", "gremlins"],
        ["--flap-interval", "0"],
        ["--getframe-delay", "-1"],
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "error" in error


@pytest.mark.parametrize(
    ("fault", "knobs"),
    [
        ("truncated", {"fault": "truncated"}),
        ("junk-json", {"fault": "junk-json"}),
        ("silent", {"answer_getframe": False, "push_frames": False}),
        ("half-open", {"half_open": True}),
        ("refuse", {"client_limit": 0}),
    ],
)
def test_fault_option_sets_the_knobs(fault: str, knobs: dict[str, Any]) -> None:
    chosen = _factory_knobs(_parse_args(["--fault", fault, "--flap-interval", "3"]))
    assert chosen.items() >= {**knobs, "flap_interval": 3.0}.items()
    DemoCameraFactory(Clock(), **chosen)  # they are all keywords it takes


def test_every_fault_option_is_explained() -> None:
    assert set(FAULTS) < set(CLI_FAULTS)
    assert {"silent", "half-open", "refuse", "black-hole"} <= set(CLI_FAULTS)
