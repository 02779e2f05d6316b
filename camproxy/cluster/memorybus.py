"""An in-memory :class:`IBus` for unit tests: several daemons, one fake Redis, no socket.

Each simulated daemon gets its own :class:`MemoryBus`; they all share one
:class:`MemoryRedis`, whose clock (a :class:`twisted.internet.task.Clock` in tests) drives
key expiry, command timeouts and reconnects. The server can be stopped and started again
(like a Redis restart: its data is lost unless told otherwise), frozen and thawed (like
SIGSTOP / SIGCONT: commands hang, then time out, and the buses go down), and can drop one
bus's subscriber (like Redis dropping a client whose output buffer overflowed).

It behaves like :class:`~camproxy.cluster.redisbus.RedisBus` where the cluster logic can
tell: commands fail with :class:`BusUnavailable` at once while a bus is down and with
:class:`BusTimeout` after ``timeout`` seconds while the server is frozen; observers hear of
transitions only; ``drops`` and ``resubscriptions`` count the same events; pub/sub is at
most once. Messages are delivered synchronously, during :meth:`MemoryBus.publish`, in the
order they were published.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any, TypeVar

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from camproxy.cluster.bus import (
    BusError,
    BusTimeout,
    BusUnavailable,
    Handler,
    IBus,
    StateObserver,
)

T = TypeVar("T")


@attrs.define
class _Entry:
    value: bytes
    expires_at: float | None = None


@attrs.define
class _Pending:
    """A command sent to a frozen server: run when it thaws, unless it timed out first."""

    bus: MemoryBus
    run: Callable[[], Any]
    result: Deferred[Any]
    timer: IDelayedCall


class MemoryRedis:
    """The fake Redis server that :class:`MemoryBus` instances share."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.running = True
        self.frozen = False
        self._data: dict[str, _Entry] = {}
        self._buses: list[MemoryBus] = []
        self._pending: list[_Pending] = []
        self._messages: deque[tuple[str, bytes]] = deque()
        self._delivering = False

    # Faults

    def stop(self) -> None:
        """The server goes away: every bus loses both its connections."""
        self.running = False
        self.frozen = False
        self._fail_pending(BusUnavailable("Redis went away"))
        for bus in list(self._buses):
            bus._lost(commands=True, subscriber=True)

    def start(self, *, keep_data: bool = False) -> None:
        """The server is back (empty, like a Redis without persistence, unless
        ``keep_data``); the buses reconnect on their next retry."""
        if not keep_data:
            self._data.clear()
        self.running = True

    def freeze(self) -> None:
        """The server stops answering but keeps its connections (SIGSTOP): commands wait,
        and each bus goes down once its ``timeout`` has passed."""
        if self.frozen or not self.running:
            return
        self.frozen = True
        for bus in list(self._buses):
            bus._frozen()

    def thaw(self) -> None:
        """The server answers again (SIGCONT): the commands still waiting are run."""
        if not self.frozen:
            return
        self.frozen = False
        pending, self._pending = self._pending, []
        for item in pending:
            if item.result.called:
                continue
            item.timer.cancel()
            try:
                item.result.callback(item.run())
            except BusError as error:
                item.result.errback(error)

    def drop_subscriber(self, bus: MemoryBus) -> None:
        """Drop ``bus``'s subscriber connection, as Redis does when a client reads its
        messages too slowly; it resubscribes on its next retry."""
        bus._lost(commands=False, subscriber=True)

    # Used by the buses

    def _attach(self, bus: MemoryBus) -> None:
        if bus not in self._buses:
            self._buses.append(bus)

    def _detach(self, bus: MemoryBus) -> None:
        if bus in self._buses:
            self._buses.remove(bus)
        for item in [p for p in self._pending if p.bus is bus]:
            self._pending.remove(item)
            item.timer.cancel()
            if not item.result.called:
                item.result.errback(BusUnavailable("bus stopped"))

    def _fail_pending(self, error: BusError) -> None:
        pending, self._pending = self._pending, []
        for item in pending:
            item.timer.cancel()
            if not item.result.called:
                item.result.errback(error)

    def _execute(self, bus: MemoryBus, run: Callable[[], T]) -> Deferred[T]:
        if self.frozen:
            result: Deferred[T] = Deferred()
            timer = self.clock.callLater(bus.timeout, self._timed_out, bus, result)
            self._pending.append(_Pending(bus, run, result, timer))
            return result
        try:
            return defer.succeed(run())
        except BusError as error:
            return defer.fail(error)

    def _timed_out(self, bus: MemoryBus, result: Deferred[Any]) -> None:
        # As with txredisapi: an unanswered command fails every command waiting on the same
        # connection, and aborts it.
        mine = [p for p in self._pending if p.bus is bus]
        self._pending = [p for p in self._pending if p.bus is not bus]
        for item in mine:
            if item.timer.active():
                item.timer.cancel()
            if not item.result.called:
                item.result.errback(BusTimeout(f"Redis did not answer in {bus.timeout} s"))
        bus._lost(commands=True, subscriber=False)

    def _now(self) -> float:
        return self.clock.seconds()

    def _entry(self, key: str) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._now():
            del self._data[key]
            return None
        return entry

    def _bytes(self, key: str) -> bytes | None:
        entry = self._entry(key)
        return None if entry is None else entry.value

    def _expiry(self, px: int | None) -> float | None:
        if px is None:
            return None
        if px <= 0:
            raise BusError("invalid expire time in 'set' command")
        return self._now() + px / 1000.0

    def _publish(self, channel: str, payload: bytes) -> int:
        receivers = sum(bus._receivers(channel) for bus in self._buses)
        self._messages.append((channel, payload))
        if not self._delivering:
            self._delivering = True
            try:
                while self._messages:
                    name, data = self._messages.popleft()
                    for bus in list(self._buses):
                        bus._deliver(name, data)
            finally:
                self._delivering = False
        return receivers


@implementer(IBus)
class MemoryBus(Service):
    """:class:`IBus` on a :class:`MemoryRedis`; a :class:`Service` that connects when
    started. ``retry`` is the delay between reconnection attempts while down."""

    log = Logger()

    def __init__(self, server: MemoryRedis, *, timeout: float = 2.0, retry: float = 0.5) -> None:
        self.server = server
        self.clock = server.clock
        self.timeout = timeout
        self.retry = retry
        self.connected = False
        self.drops = 0
        self.resubscriptions = 0
        self._commands_up = False
        self._subscriber_up = False
        self._subscribed_before = False
        self._observers: list[StateObserver] = []
        self._channels: dict[str, list[Handler]] = {}
        self._patterns: dict[str, list[Handler]] = {}
        self._retrying: IDelayedCall | None = None
        self._freeze_timer: IDelayedCall | None = None

    # Lifecycle and connection state

    def startService(self) -> None:
        super().startService()
        self.server._attach(self)
        self._connect()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for timer in (self._retrying, self._freeze_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._retrying = self._freeze_timer = None
        self.server._detach(self)
        self._commands_up = self._subscriber_up = False
        self._update_state()
        return defer.succeed(None)

    def _connect(self) -> None:
        self._retrying = None
        if not self.running:
            return
        if not self.server.running or self.server.frozen:
            self._retrying = self.clock.callLater(self.retry, self._connect)
            return
        self._commands_up = True
        if not self._subscriber_up:
            self._subscriber_up = True
            if self._subscribed_before:
                self.resubscriptions += 1
            self._subscribed_before = True
        self._update_state()

    def _lost(self, *, commands: bool, subscriber: bool) -> None:
        if not self.running:
            return
        if commands:
            self._commands_up = False
        if subscriber and self._subscriber_up:
            self._subscriber_up = False
            self.drops += 1
        self._update_state()
        if self._retrying is None and not (self._commands_up and self._subscriber_up):
            self._retrying = self.clock.callLater(self.retry, self._connect)

    def _frozen(self) -> None:
        if self.connected and self._freeze_timer is None:
            self._freeze_timer = self.clock.callLater(self.timeout, self._heartbeat_failed)

    def _heartbeat_failed(self) -> None:
        self._freeze_timer = None
        if self.server.frozen:
            self._lost(commands=True, subscriber=True)

    def _update_state(self) -> None:
        connected = self._commands_up and self._subscriber_up
        if connected == self.connected:
            return
        self.connected = connected
        for observer in list(self._observers):
            try:
                observer(connected)
            except Exception:
                self.log.failure("Bus state observer failed")

    def add_observer(self, observer: StateObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: StateObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    # Pub/sub

    def _receivers(self, channel: str) -> int:
        """How Redis counts this bus in the answer to a PUBLISH on ``channel``."""
        if not self._subscriber_up:
            return 0
        patterns = sum(1 for pattern in self._patterns if fnmatchcase(channel, pattern))
        return (channel in self._channels) + patterns

    def _deliver(self, channel: str, payload: bytes) -> None:
        if not self._subscriber_up:
            return
        handlers = list(self._channels.get(channel, []))
        for pattern, more in list(self._patterns.items()):
            if fnmatchcase(channel, pattern):
                handlers += more
        for handler in handlers:
            try:
                handler(channel, payload)
            except Exception:
                self.log.failure("Handler for channel {channel} failed", channel=channel)

    def publish(self, channel: str, payload: bytes) -> Deferred[int]:
        return self._command(lambda: self.server._publish(channel, bytes(payload)))

    def subscribe(self, channel: str, handler: Handler) -> Deferred[None]:
        self._channels.setdefault(channel, []).append(handler)
        return defer.succeed(None)

    def unsubscribe(self, channel: str, handler: Handler) -> Deferred[None]:
        _remove(self._channels, channel, handler)
        return defer.succeed(None)

    def psubscribe(self, pattern: str, handler: Handler) -> Deferred[None]:
        self._patterns.setdefault(pattern, []).append(handler)
        return defer.succeed(None)

    def punsubscribe(self, pattern: str, handler: Handler) -> Deferred[None]:
        _remove(self._patterns, pattern, handler)
        return defer.succeed(None)

    # Commands

    def _command(self, run: Callable[[], T]) -> Deferred[T]:
        if not self._commands_up:
            return defer.fail(BusUnavailable("not connected to Redis"))
        return self.server._execute(self, run)

    def set(self, key: str, value: bytes, px: int | None = None) -> Deferred[None]:
        def run() -> None:
            self.server._data[key] = _Entry(bytes(value), self.server._expiry(px))

        return self._command(run)

    def get(self, key: str) -> Deferred[bytes | None]:
        return self._command(lambda: self.server._bytes(key))

    def mget(self, keys: Sequence[str]) -> Deferred[list[bytes | None]]:
        return self._command(lambda: [self.server._bytes(key) for key in keys])

    def delete(self, key: str) -> Deferred[bool]:
        def run() -> bool:
            existed = self.server._entry(key) is not None
            self.server._data.pop(key, None)
            return existed

        return self._command(run)

    def incr(self, key: str) -> Deferred[int]:
        def run() -> int:
            current = self.server._bytes(key)
            try:
                number = int(current or b"0") + 1
            except ValueError:
                raise BusError("value is not an integer or out of range") from None
            entry = self.server._entry(key)
            expires_at = entry.expires_at if entry else None
            self.server._data[key] = _Entry(str(number).encode(), expires_at)
            return number

        return self._command(run)

    def scan(self, prefix: str) -> Deferred[list[str]]:
        def run() -> list[str]:
            keys = [k for k in list(self.server._data) if k.startswith(prefix)]
            return sorted(k for k in keys if self.server._entry(k) is not None)

        return self._command(run)

    # Leases

    def acquire_lease(self, key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        def run() -> bool:
            if self.server._entry(key) is not None:
                return False
            self.server._data[key] = _Entry(token.encode(), self.server._expiry(ttl_ms))
            return True

        return self._command(run)

    def renew_lease(self, key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        def run() -> bool:
            if self.server._bytes(key) != token.encode():
                return False
            self.server._data[key].expires_at = self.server._now() + ttl_ms / 1000.0
            return True

        return self._command(run)

    def release_lease(self, key: str, token: str) -> Deferred[bool]:
        def run() -> bool:
            if self.server._bytes(key) != token.encode():
                return False
            del self.server._data[key]
            return True

        return self._command(run)


def _remove(registry: dict[str, list[Handler]], name: str, handler: Handler) -> None:
    handlers = registry.get(name, [])
    if handler in handlers:
        handlers.remove(handler)
    if not handlers:
        registry.pop(name, None)
