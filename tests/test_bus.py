"""The cluster's bus: MemoryBus with a fake clock, RedisBus against a real redis-server.

The Redis tests start their own servers (``tests/servers.py``) and break them the ways a
production Redis breaks: killed and restarted, frozen with SIGSTOP, dropping a subscriber
that reads too slowly. They wait on the bus's own events, or poll with a bound, never for a
fixed time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider
from zope.interface.verify import verifyObject

from camproxy.cluster.bus import BusError, BusTimeout, BusUnavailable, IBus
from camproxy.cluster.memorybus import MemoryBus, MemoryRedis
from camproxy.cluster.redisbus import RedisBus
from camproxy.cluster.redisurl import RedisURL, parse_redis_url
from tests import servers
from tests.certs import make_self_signed
from tests.conftest import wait_until

# The server fixtures live in tests/servers.py; naming them here makes them this module's.
redis_server = servers.redis_server
redis_factory = servers.redis_factory
postgres_server = servers.postgres_server


def jpeg_like(size: int = 30_000) -> bytes:
    """A JPEG's shape (SOI, random body with CR LF and NUL bytes in it, EOI)."""
    body = bytearray(os.urandom(size - 4))
    body[100:104] = b"\r\n\x00\n"
    return b"\xff\xd8" + bytes(body) + b"\xff\xd9"


class Inbox:
    """A handler that keeps what it receives, to be awaited in order."""

    def __init__(self) -> None:
        self.queue: DeferredQueue[tuple[str, bytes]] = DeferredQueue()
        self.received: list[tuple[str, bytes]] = []

    def __call__(self, channel: str, payload: bytes) -> None:
        self.received.append((channel, payload))
        self.queue.put((channel, payload))

    def next(self, reactor: Any, timeout: float = 5.0) -> Deferred[tuple[str, bytes]]:
        return self.queue.get().addTimeout(timeout, reactor)

    def clear(self) -> None:
        self.received.clear()
        self.queue.pending.clear()


def when_state(bus: Any, up: bool, reactor: Any, timeout: float = 10.0) -> Deferred[None]:
    """Fires when ``bus.connected`` is ``up`` (at once if it is already)."""
    if bus.connected == up:
        return defer.succeed(None)
    reached: Deferred[None] = Deferred()

    def observer(state: bool) -> None:
        if state == up and not reached.called:
            bus.remove_observer(observer)
            reached.callback(None)

    bus.add_observer(observer)
    return reached.addTimeout(timeout, reactor)


# --- Redis URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis://localhost", RedisURL("redis", host="localhost", port=6379)),
        ("redis://10.0.0.5:6380/2", RedisURL("redis", host="10.0.0.5", port=6380, db=2)),
        (
            "redis://:s%40cret@redis.lan:7000/1",
            RedisURL("redis", host="redis.lan", port=7000, db=1, password="s@cret"),
        ),
        (
            "redis://camproxy:pw@[::1]:6379",
            RedisURL("redis", host="::1", port=6379, username="camproxy", password="pw"),
        ),
        ("rediss://redis.example.com", RedisURL("rediss", host="redis.example.com", port=6379)),
        ("redis://h?db=3", RedisURL("redis", host="h", port=6379, db=3)),
        ("unix:///run/redis/redis.sock", RedisURL("unix", path="/run/redis/redis.sock")),
        (
            "unix:///run/redis.sock?db=4&password=pw",
            RedisURL("unix", path="/run/redis.sock", db=4, password="pw"),
        ),
        ("unix://:pw@/tmp/r.sock", RedisURL("unix", path="/tmp/r.sock", password="pw")),
    ],
)
def test_parse_redis_url(url: str, parsed: RedisURL) -> None:
    assert parse_redis_url(url) == parsed
    assert parse_redis_url(url).password == parsed.password


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379",
        "localhost:6379",
        "redis://",
        "redis://host:notaport",
        "redis://host:70000",
        "redis://host:0",
        "redis://host/zero",
        "redis://host/-1",
        "redis://host/1?db=2",
        "redis://host?timeout=3",
        "redis://host#x",
        "unix://",
        "rediss://:pw@/1",
    ],
)
def test_bad_redis_urls_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(ValueError, match="Redis URL") as refused:
        parse_redis_url(url)
    assert "\n" not in str(refused.value)


def test_redacted_url_hides_the_password() -> None:
    assert parse_redis_url("redis://u:secret@h:1/2").redacted() == "redis://u:***@h:1/2"
    assert "secret" not in repr(parse_redis_url("redis://:secret@h"))
    assert parse_redis_url("unix://:secret@/r.sock?db=1").redacted() == "unix://:***@/r.sock?db=1"


def test_ca_file_problems_are_one_line_errors(reactor: Any, tmp_path: Any) -> None:
    url = parse_redis_url("rediss://127.0.0.1:6380")
    with pytest.raises(ValueError, match="cannot read the Redis CA file"):
        url.endpoint(reactor, ca_file=tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        url.endpoint(reactor, ca_file=tmp_path / "empty.pem")
    with pytest.raises(ValueError, match="needs a rediss:// URL"):
        parse_redis_url("redis://h").endpoint(reactor, ca_file=tmp_path / "empty.pem")


# --- MemoryBus --------------------------------------------------------------------------


def memory_cluster(count: int = 2) -> tuple[Clock, MemoryRedis, list[MemoryBus]]:
    clock = Clock()
    server = MemoryRedis(clock)
    buses = [MemoryBus(server, timeout=2.0, retry=0.5) for _ in range(count)]
    for bus in buses:
        bus.startService()
    return clock, server, buses


def result(deferred: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (MemoryBus answers at once)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def test_both_buses_provide_ibus(reactor: Any) -> None:
    _, _, (bus, _) = memory_cluster()
    assert verifyObject(IBus, bus)
    assert verifyObject(IBus, RedisBus(reactor, "redis://127.0.0.1:1"))


def test_memory_pubsub_between_daemons_is_byte_exact() -> None:
    _, _, (a, b) = memory_cluster()
    frames, events = Inbox(), Inbox()
    result(b.subscribe("frames:cam1", frames))
    result(b.psubscribe("events:*", events))
    frame = jpeg_like()
    assert result(a.publish("frames:cam1", frame)) == 1
    assert result(a.publish("events:cam1", b"{}")) == 1
    assert result(a.publish("frames:cam2", b"nobody")) == 0
    assert frames.received == [("frames:cam1", frame)]
    assert events.received == [("events:cam1", b"{}")]
    result(b.unsubscribe("frames:cam1", frames))
    assert result(a.publish("frames:cam1", frame)) == 0


def test_memory_publish_counts_receivers_as_redis_does() -> None:
    _, _, (a, b) = memory_cluster()
    inbox = Inbox()
    a.subscribe("frames:cam1", inbox)
    b.subscribe("frames:cam1", inbox)
    b.psubscribe("frames:*", inbox)
    b.psubscribe("*:cam1", inbox)
    assert result(a.publish("frames:cam1", b"x")) == 4
    assert len(inbox.received) == 4


def test_memory_delivery_keeps_publish_order_when_handlers_publish() -> None:
    _, _, (a, b) = memory_cluster()
    seen: list[bytes] = []

    def first(channel: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"1":
            a.publish("c", b"2")

    a.subscribe("c", first)
    b.subscribe("c", lambda channel, payload: seen.append(b"b" + payload))
    result(a.publish("c", b"1"))
    assert seen == [b"1", b"b1", b"2", b"b2"]


def test_memory_handler_failure_does_not_stop_delivery() -> None:
    _, _, (a, b) = memory_cluster()
    inbox = Inbox()

    def broken(channel: str, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    b.subscribe("c", broken)
    b.subscribe("c", inbox)
    result(a.publish("c", b"x"))
    assert inbox.received == [("c", b"x")]


def test_memory_leases_check_the_token_and_expire() -> None:
    clock, _, (a, b) = memory_cluster()
    assert result(a.acquire_lease("lease:cam1", "daemon-a", 10_000))
    assert not result(b.acquire_lease("lease:cam1", "daemon-b", 10_000))
    assert not result(b.renew_lease("lease:cam1", "daemon-b", 10_000))
    assert not result(b.release_lease("lease:cam1", "daemon-b"))
    clock.advance(9)
    assert result(a.renew_lease("lease:cam1", "daemon-a", 10_000))
    clock.advance(9)
    assert result(b.get("lease:cam1")) == b"daemon-a"
    clock.advance(1.5)
    assert not result(a.renew_lease("lease:cam1", "daemon-a", 10_000)), "expired"
    assert result(b.acquire_lease("lease:cam1", "daemon-b", 10_000))
    assert not result(a.release_lease("lease:cam1", "daemon-a"))
    assert result(b.release_lease("lease:cam1", "daemon-b"))
    assert result(a.get("lease:cam1")) is None


def test_memory_keys_counters_and_hashes() -> None:
    clock, _, (a, b) = memory_cluster()
    assert [result(a.incr("epoch:cam1")) for _ in range(3)] == [1, 2, 3]
    assert result(b.incr("epoch:cam1")) == 4
    frame = jpeg_like()
    result(a.set("frame:cam1", frame, px=1500))
    result(a.set("count:cam1:a", b"2", px=5000))
    result(b.set("count:cam1:b", b"3", px=5000))
    assert result(b.get("frame:cam1")) == frame
    assert result(b.scan("count:cam1:")) == ["count:cam1:a", "count:cam1:b"]
    assert result(b.mget(["count:cam1:a", "nope", "count:cam1:b"])) == [b"2", None, b"3"]
    clock.advance(1.5)
    assert result(b.get("frame:cam1")) is None
    assert not result(a.delete("viewers:cam1"))
    result(a.set("name:cam1", b"garden"))
    with pytest.raises(BusError):
        result(a.incr("name:cam1"))
    with pytest.raises(BusError):
        result(a.set("k", b"v", px=0))


def test_memory_server_restart_downs_and_ups_every_bus() -> None:
    clock, server, (a, b) = memory_cluster()
    states: list[bool] = []
    b.add_observer(states.append)
    inbox = Inbox()
    b.subscribe("c", inbox)
    result(a.set("k", b"v"))
    server.stop()
    assert (a.connected, b.connected) == (False, False)
    assert states == [False]
    with pytest.raises(BusUnavailable):
        result(a.publish("c", b"lost"))
    server.start()
    clock.advance(0.5)
    assert (a.connected, b.connected) == (True, True)
    assert states == [False, True]
    assert (b.drops, b.resubscriptions) == (1, 1)
    assert result(a.get("k")) is None, "a Redis without persistence comes back empty"
    result(a.publish("c", b"again"))
    assert inbox.received == [("c", b"again")]


def test_memory_frozen_server_times_commands_out_then_recovers() -> None:
    clock, server, (a, b) = memory_cluster()
    server.freeze()
    waiting = a.get("k")
    assert not waiting.called
    clock.advance(1.9)
    assert a.connected and not waiting.called
    clock.advance(0.1)
    with pytest.raises(BusTimeout):
        result(waiting)
    assert (a.connected, b.connected) == (False, False)
    with pytest.raises(BusUnavailable):
        result(a.get("k"))
    clock.advance(5)
    assert not a.connected, "no reconnect while frozen"
    server.thaw()
    clock.advance(0.5)
    assert (a.connected, b.connected) == (True, True)


def test_memory_commands_sent_while_frozen_complete_on_thaw() -> None:
    clock, server, (a, _) = memory_cluster()
    server.freeze()
    incremented = a.incr("n")
    clock.advance(1)
    server.thaw()
    assert result(incremented) == 1
    clock.advance(5)
    assert a.connected


def test_memory_dropped_subscriber_resubscribes_and_counts() -> None:
    clock, server, (a, b) = memory_cluster()
    inbox = Inbox()
    b.subscribe("c", inbox)
    server.drop_subscriber(b)
    assert not b.connected and a.connected
    assert result(a.publish("c", b"lost")) == 0
    assert result(b.get("missing")) is None, "commands still work"
    clock.advance(0.5)
    assert b.connected and (b.drops, b.resubscriptions) == (1, 1)
    assert result(a.publish("c", b"kept")) == 1
    assert inbox.received == [("c", b"kept")]


def test_memory_bus_leaves_no_timer_behind() -> None:
    clock, server, (a, b) = memory_cluster()
    server.freeze()
    waiting = a.get("k")
    for bus in (a, b):
        result(bus.stopService())
    with pytest.raises(BusUnavailable):
        result(waiting)
    server.stop()
    assert clock.getDelayedCalls() == []


# --- RedisBus without a socket: what it writes, what it does with the answers -----------


class FakeRedisConnection:
    """One of a RedisBus's connections, made on a MemoryReactorClock, spoken to by hand."""

    def __init__(self, reactor: MemoryReactorClock, index: int) -> None:
        self.reactor = reactor
        factory = reactor.unixClients[index][1]
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport(lenient=True)
        self.protocol.makeConnection(self.transport)

    def sent(self) -> list[list[bytes]]:
        """The commands written since the last call, as lists of arguments."""
        data, commands = self.transport.value(), []
        self.transport.clear()
        while data:
            header, data = data.split(b"\r\n", 1)
            arguments = []
            for _ in range(int(header[1:])):
                length, data = data.split(b"\r\n", 1)
                size = int(length[1:])
                arguments.append(data[:size])
                data = data[size + 2 :]
            commands.append(arguments)
        return commands

    def reply(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        for _ in range(50):  # txredisapi resumes parsing after each bulk in callLater(0)
            self.reactor.advance(0)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def bulk(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)


def confirm(kind: bytes, name: bytes, count: int) -> bytes:
    """Redis's answer to one (P)SUBSCRIBE."""
    return b"*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n:%d\r\n" % (len(kind), kind, len(name), name, count)


def fake_redis_bus(url: str = "unix:///r.sock") -> tuple[MemoryReactorClock, RedisBus]:
    reactor = MemoryReactorClock()
    bus = RedisBus(reactor, url, timeout=2.0, heartbeat=1.0, retry_initial=0.5, retry_max=4.0)
    return reactor, bus


def test_redis_handshake_subscribes_one_channel_per_command() -> None:
    reactor, bus = fake_redis_bus("unix://:pw@/r.sock?db=2")
    states: list[bool] = []
    bus.add_observer(states.append)
    inbox = Inbox()
    bus.subscribe("a", inbox)
    bus.subscribe("b", inbox)
    bus.psubscribe("p:*", inbox)
    bus.startService()
    commands, subscriber = FakeRedisConnection(reactor, 0), FakeRedisConnection(reactor, 1)
    assert commands.sent() == [[b"AUTH", b"pw"], [b"SELECT", b"2"], [b"PING"]]
    assert subscriber.sent() == [
        [b"AUTH", b"pw"],
        [b"PING"],
        [b"SUBSCRIBE", b"a"],
        [b"SUBSCRIBE", b"b"],
        [b"PSUBSCRIBE", b"p:*"],
    ]
    subscribed = bus.subscribe("c", inbox)  # during the handshake: sent at once, once
    assert subscriber.sent() == [[b"SUBSCRIBE", b"c"]]

    commands.reply(b"+OK\r\n+OK\r\n+PONG\r\n")
    subscriber.reply(b"+OK\r\n+PONG\r\n" + confirm(b"subscribe", b"a", 1))
    assert not bus.connected, "not before every subscription is confirmed"
    subscriber.reply(confirm(b"subscribe", b"b", 2) + confirm(b"psubscribe", b"p:*", 3))
    assert bus.connected and states == [True]
    assert not subscribed.called
    subscriber.reply(confirm(b"subscribe", b"c", 4))
    assert subscribed.called

    subscriber.reply(bulk(b"message", b"a", b"\xff\xd8\r\n"))
    subscriber.reply(bulk(b"pmessage", b"p:*", b"p:1", b"42"))
    assert inbox.received == [("a", b"\xff\xd8\r\n"), ("p:1", b"42")]
    commands.lose()
    subscriber.lose()


def test_redis_unanswered_ping_drops_the_connection_and_backs_off() -> None:
    reactor, bus = fake_redis_bus()
    bus.startService()
    commands, subscriber = FakeRedisConnection(reactor, 0), FakeRedisConnection(reactor, 1)
    commands.sent(), subscriber.sent()
    commands.reply(b"+PONG\r\n")
    subscriber.reply(b"+PONG\r\n")
    assert bus.connected

    reactor.advance(1.0)
    assert commands.sent() == [[b"PING"]] and subscriber.sent() == [[b"PING"]]
    commands.reply(b"+PONG\r\n")
    reactor.advance(1.0)  # another beat; the subscriber's first PING is still unanswered
    assert subscriber.sent() == [], "one PING at a time"
    reactor.advance(1.0)
    assert subscriber.transport.disconnected and not commands.transport.disconnected
    subscriber.lose()
    assert not bus.connected and bus.drops == 1

    # The next attempt comes after about retry_initial seconds, then twice as long per
    # connection that fails its handshake, up to retry_max.
    delays = []
    for attempt in range(2, 7):
        started = reactor.seconds()
        while len(reactor.unixClients) == attempt:
            reactor.advance(0.01)
            assert reactor.seconds() - started < 10, "no reconnection attempt"
        delays.append(reactor.seconds() - started)
        again = FakeRedisConnection(reactor, attempt)
        commands.reply(b"+PONG\r\n" * len(commands.sent()))
        reactor.advance(2.0)  # the handshake's PING times out
        assert again.transport.disconnected
        again.lose()
    for delay, expected in zip(delays, [0.5, 1, 2, 4, 4], strict=True):
        assert expected * 0.8 - 0.01 <= delay <= expected * 1.2 + 0.01, delays  # jitter
    commands.lose()


def test_redis_command_timeout_fails_the_command() -> None:
    reactor, bus = fake_redis_bus()
    with pytest.raises(BusUnavailable):
        result(bus.get("k"))
    bus.startService()
    commands, subscriber = FakeRedisConnection(reactor, 0), FakeRedisConnection(reactor, 1)
    commands.reply(b"+PONG\r\n")
    subscriber.reply(b"+PONG\r\n")
    answered = bus.get("k")
    commands.reply(b"$-1\r\n")
    assert result(answered) is None
    waiting = bus.get("k")
    reactor.advance(1.9)
    assert not waiting.called
    reactor.advance(0.1)
    with pytest.raises(BusTimeout):
        result(waiting)
    assert commands.transport.disconnected
    commands.lose()
    subscriber.lose()


# --- RedisBus against a real redis-server -----------------------------------------------


@pytest_twisted.async_yield_fixture
async def bus_factory(reactor: Any) -> AsyncIterator[Callable[..., RedisBus]]:
    """RedisBus instances with short timeouts, started; all stopped afterwards."""
    started: list[RedisBus] = []

    def start(url: str, **options: Any) -> RedisBus:
        settings: dict[str, Any] = {"timeout": 1.0, "heartbeat": 0.25, "retry_max": 1.0}
        settings.update(options)
        bus = RedisBus(reactor, url, **settings)
        bus.startService()
        started.append(bus)
        return bus

    yield start
    for bus in started:
        await bus.stopService()


@pytest.fixture
def channel(request: Any) -> str:
    """A channel and key prefix of this test's own, on the shared Redis."""
    return f"test:{request.node.name}:"


@pytest_twisted.ensureDeferred
async def test_redis_binary_pubsub_between_two_daemons(
    reactor: Any, redis_server: servers.RedisServer, bus_factory: Any, channel: str
) -> None:
    a, b = bus_factory(redis_server.url), bus_factory(redis_server.url)
    frames, events, more = Inbox(), Inbox(), Inbox()
    await b.subscribe(channel + "frames", frames)
    await b.subscribe(channel + "frames", more)
    await b.psubscribe(channel + "events:*", events)
    await when_state(a, True, reactor)
    await when_state(b, True, reactor)
    frame, tiny = jpeg_like(), b"42"
    assert await a.publish(channel + "frames", frame) == 1
    assert await frames.next(reactor) == (channel + "frames", frame)
    assert await more.next(reactor) == (channel + "frames", frame)
    await a.publish(channel + "frames", tiny)
    assert await frames.next(reactor) == (channel + "frames", tiny), "bytes, not an int"
    await a.publish(channel + "events:light", b"\xc3\xa9t\xc3\xa9")
    assert await events.next(reactor) == (channel + "events:light", "été".encode())
    await a.psubscribe(channel + "*", more)  # Redis counts each pattern that matches too
    assert await b.publish(channel + "frames", b"x") == 2
    await a.punsubscribe(channel + "*", more)
    await b.unsubscribe(channel + "frames", frames)
    await b.unsubscribe(channel + "frames", more)
    assert await a.publish(channel + "frames", frame) == 0
    await b.punsubscribe(channel + "events:*", events)
    assert await a.publish(channel + "events:light", b"x") == 0


@pytest_twisted.ensureDeferred
async def test_redis_handler_failure_does_not_stop_delivery(
    reactor: Any, redis_server: servers.RedisServer, bus_factory: Any, channel: str
) -> None:
    bus = bus_factory(redis_server.url)
    inbox = Inbox()

    def broken(name: str, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    await bus.subscribe(channel, broken)
    await bus.subscribe(channel, inbox)
    await when_state(bus, True, reactor)
    await bus.publish(channel, b"1")
    await bus.publish(channel, b"2")
    assert [await inbox.next(reactor), await inbox.next(reactor)] == [
        (channel, b"1"),
        (channel, b"2"),
    ]
    assert bus.connected and bus.drops == 0


@pytest_twisted.ensureDeferred
async def test_redis_leases_epochs_and_expiring_keys(
    reactor: Any, redis_server: servers.RedisServer, bus_factory: Any, channel: str
) -> None:
    a, b = bus_factory(redis_server.url), bus_factory(redis_server.url)
    await when_state(a, True, reactor)
    await when_state(b, True, reactor)
    lease = channel + "lease"
    assert await a.acquire_lease(lease, "daemon-a", 10_000)
    assert not await b.acquire_lease(lease, "daemon-b", 10_000)
    assert not await b.renew_lease(lease, "daemon-b", 10_000)
    assert not await b.release_lease(lease, "daemon-b")
    assert await a.renew_lease(lease, "daemon-a", 20_000)
    assert 10_000 < int(redis_server.command("PTTL", lease)) <= 20_000
    redis_server.command("SCRIPT", "FLUSH")  # the EVALSHA fallback to EVAL
    assert await a.renew_lease(lease, "daemon-a", 20_000)
    assert await a.release_lease(lease, "daemon-a")
    assert await b.acquire_lease(lease, "daemon-b", 50)
    await wait_until(reactor, lambda: redis_server.command("EXISTS", lease) == 0, 5)
    assert await a.acquire_lease(lease, "daemon-a", 10_000), "the expired lease is free"

    epoch = channel + "epoch"
    assert [await a.incr(epoch), await b.incr(epoch), await a.incr(epoch)] == [1, 2, 3]

    frame = jpeg_like()
    await a.set(channel + "frame", frame, px=200)
    assert await b.get(channel + "frame") == frame
    assert await b.mget([channel + "frame", channel + "none"]) == [frame, None]
    await wait_until(reactor, lambda: redis_server.command("EXISTS", channel + "frame") == 0, 5)
    assert await b.get(channel + "frame") is None

    await a.set(channel + "count:a", b"2", px=5000)
    await b.set(channel + "count:b", b"3")
    await b.set(channel + "count*b", b"not under the prefix")
    assert await a.scan(channel + "count:") == [channel + "count:a", channel + "count:b"]
    assert await a.delete(channel + "count:b")
    assert not await a.delete(channel + "count:b")

    await a.set(channel + "name", b"garden")
    with pytest.raises(BusError):
        await a.incr(channel + "name")


@pytest_twisted.ensureDeferred
async def test_redis_password_database_and_unix_socket(
    reactor: Any, redis_factory: Any, bus_factory: Any
) -> None:
    server = redis_factory(password="s3cret", unix=True)
    tcp = bus_factory(server.url + "/5")
    unix = bus_factory(f"unix://:s3cret@{server.unix_socket}?db=5")
    await when_state(tcp, True, reactor)
    await when_state(unix, True, reactor)
    await tcp.set("k", b"in db 5")
    assert await unix.get("k") == b"in db 5"
    assert server.command("GET", "k") is None, "not in db 0"
    inbox = Inbox()
    await unix.subscribe("c", inbox)
    await tcp.publish("c", b"hello")
    assert await inbox.next(reactor) == ("c", b"hello")


@pytest_twisted.ensureDeferred
async def test_redis_wrong_password_never_comes_up(
    reactor: Any, redis_factory: Any, bus_factory: Any
) -> None:
    server = redis_factory(password="right")
    messages: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        messages.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        bus = bus_factory(server.url.replace("right", "wrong"))
        await wait_until(reactor, lambda: any("handshake" in m for m in messages), 5)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not bus.connected
    assert any("WRONGPASS" in m or "invalid" in m for m in messages), messages
    with pytest.raises(BusUnavailable):
        await bus.get("k")


@pytest_twisted.ensureDeferred
async def test_rediss_checks_the_certificate(
    reactor: Any, redis_factory: Any, bus_factory: Any, tmp_path: Any
) -> None:
    certificate = make_self_signed(tmp_path)
    server = redis_factory(tls=(certificate.cert, certificate.key))
    trusting = bus_factory(server.url, ca_file=certificate.cert)
    await when_state(trusting, True, reactor)
    inbox = Inbox()
    await trusting.subscribe("c", inbox)
    frame = jpeg_like()
    await trusting.publish("c", frame)
    assert await inbox.next(reactor) == ("c", frame)

    messages: list[str] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        messages.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        doubting = bus_factory(server.url)  # the system's CAs do not know this certificate
        await wait_until(reactor, lambda: any("certificate" in m for m in messages), 5)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not doubting.connected


@pytest_twisted.ensureDeferred
async def test_redis_killed_and_restarted(
    reactor: Any, redis_factory: Any, bus_factory: Any
) -> None:
    server = redis_factory()
    a, b = bus_factory(server.url), bus_factory(server.url)
    inbox = Inbox()
    await b.subscribe("frames", inbox)
    await when_state(a, True, reactor)
    await when_state(b, True, reactor)
    states: list[bool] = []
    b.add_observer(states.append)

    server.kill()
    await when_state(a, False, reactor, timeout=3)
    await when_state(b, False, reactor, timeout=3)
    started = reactor.seconds()
    with pytest.raises(BusUnavailable):
        await a.publish("frames", b"lost")
    assert reactor.seconds() - started < 0.5, "fails at once, no waiting for Redis"

    server.start()
    await when_state(a, True, reactor, timeout=5)
    await when_state(b, True, reactor, timeout=5)
    assert states == [False, True]
    assert (b.drops, b.resubscriptions) == (1, 1)
    frame = jpeg_like()
    assert await a.publish("frames", frame) == 1
    assert await inbox.next(reactor) == ("frames", frame)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_redis_frozen_with_sigstop(
    reactor: Any, redis_factory: Any, bus_factory: Any
) -> None:
    server = redis_factory()
    a, b = bus_factory(server.url), bus_factory(server.url)
    inbox = Inbox()
    await b.subscribe("frames", inbox)
    await when_state(a, True, reactor)
    await when_state(b, True, reactor)

    server.freeze()
    try:
        started = reactor.seconds()
        with pytest.raises(BusTimeout):
            await a.get("k")
        assert reactor.seconds() - started < 1.9, "the timeout is 1 s"
        await when_state(b, False, reactor, timeout=3)  # heartbeat 0.25 s + timeout 1 s
        await when_state(a, False, reactor, timeout=3)
        with pytest.raises(BusUnavailable):
            await a.publish("frames", b"lost")
    finally:
        server.thaw()

    await when_state(a, True, reactor, timeout=5)
    await when_state(b, True, reactor, timeout=5)
    assert b.resubscriptions == 1
    frame = jpeg_like()
    assert await a.publish("frames", frame) == 1
    assert await inbox.next(reactor) == ("frames", frame)


@pytest_twisted.ensureDeferred
async def test_redis_drops_a_slow_subscriber_which_resubscribes(
    reactor: Any, redis_factory: Any, bus_factory: Any
) -> None:
    server = redis_factory(extra=["--client-output-buffer-limit", "pubsub 256kb 128kb 1"])
    publisher = bus_factory(server.url)
    slow = bus_factory(server.url, timeout=2.0, heartbeat=0.5)
    inbox = Inbox()
    await slow.subscribe("frames", inbox)
    await when_state(publisher, True, reactor)
    await when_state(slow, True, reactor)

    # The slow daemon stops reading (a busy reactor) while frames keep coming.
    transport = slow._subscriber.protocol.transport
    transport.pauseProducing()
    frame = jpeg_like()
    overflowed = "output buffer limits"
    for _ in range(2000):
        await publisher.publish("frames", frame)
        if overflowed in server.log():
            break
    assert overflowed in server.log(), "Redis never dropped the subscriber"
    transport.resumeProducing()

    await wait_until(reactor, lambda: slow.resubscriptions == 1 and slow.connected, 10)
    assert slow.drops == 1
    assert all(payload == frame for _, payload in inbox.received), "no torn message"
    inbox.clear()
    await publisher.publish("frames", b"after")
    assert await inbox.next(reactor) == ("frames", b"after")


# --- PostgreSQL -------------------------------------------------------------------------


def test_postgres_fixture_answers(postgres_server: servers.PostgresServer) -> None:
    assert postgres_server.url.startswith("postgresql://camproxy:")
    with psycopg.connect(postgres_server.url, connect_timeout=5) as connection:
        row = connection.execute("SELECT 1, current_user, current_database()").fetchone()
    assert row == (1, "camproxy", "camproxy")
