"""The cluster's bus on a real Redis, through txredisapi's Twisted protocols.

Two connections, each kept by its own :class:`ClientService` (clock and backoff injected):
one for commands, one for pub/sub, because a subscribed Redis connection takes no other
command and a frame flood must not delay a lease renewal. Each new connection goes through a
handshake (``AUTH``, ``SELECT``, ``PING``, and on the subscriber every ``SUBSCRIBE`` and
``PSUBSCRIBE``) before the bus uses it, and a ``PING`` heartbeat afterwards: a Redis that
stops answering (frozen with SIGSTOP, overloaded, behind a dead network path) keeps its TCP
connection open, so only an unanswered command can tell.

Only txredisapi's protocol classes are used, not its connection factories, because of how
txredisapi 1.6 behaves (each checked against a real Redis):

- a command through its connection handler waits, without any timeout, for a connection
  while Redis is unreachable; the bus must fail commands at once instead;
- when ``AUTH`` or ``SELECT`` fails while (re)connecting, a timeout included (Redis frozen
  during a reconnect), the factory calls ``stopTrying()`` and never reconnects again;
- its :class:`ClientService` runs on the global reactor, with no clock to inject;
- a ``SUBSCRIBE`` of several channels gets one confirmation per channel, and the ones after
  the first are taken as the answers of the next commands on the connection; so the bus
  subscribes one channel per command.

Binary payloads need ``charset=None`` (else a payload that happens to be valid UTF-8 comes
back as ``str``) and ``convertNumbers=False`` (else ``b"42"`` comes back as ``42``).
txredisapi's ``replyTimeout`` fails a command that gets no answer in time and aborts the
connection, which is what a frozen Redis needs; its timer runs on the protocol's
``callLater``, which the bus points at its own reactor.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import txredisapi
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from camproxy.cluster.bus import (
    BusError,
    BusTimeout,
    BusUnavailable,
    Handler,
    IBus,
    StateObserver,
)
from camproxy.cluster.redisurl import RedisURL, parse_redis_url

RENEW_SCRIPT = """\
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_SCRIPT = """\
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def _translate(failure: Failure) -> Failure:
    """txredisapi's errors as the bus's own, so callers never import txredisapi."""
    if failure.check(txredisapi.TimeoutError):
        return Failure(BusTimeout(failure.getErrorMessage()))
    if failure.check(txredisapi.ConnectionError):
        return Failure(BusUnavailable(failure.getErrorMessage()))
    if failure.check(txredisapi.ResponseError, txredisapi.InvalidResponse):
        return Failure(BusError(failure.getErrorMessage()))
    return failure


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


class _TellsItsLink:
    """Mixed into txredisapi's protocols: tells the link when it connects and disconnects."""

    link: _Link

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        self.link.connection_made(self)

    def connectionLost(self, why: Failure) -> None:
        # The link first, so that the commands failing below are known to be lost with it.
        self.link.connection_lost(self, why)
        super().connectionLost(why)  # type: ignore[misc]


class _CommandProtocol(_TellsItsLink, txredisapi.RedisProtocol):
    """txredisapi's protocol, for commands."""


class _SubscriberProtocol(_TellsItsLink, txredisapi.SubscriberProtocol):
    """txredisapi's subscriber protocol, handing messages to the bus."""

    def messageReceived(
        self, pattern: bytes | str | None, channel: bytes | str, message: bytes | str
    ) -> None:
        payload = message.encode() if isinstance(message, str) else message
        self.link.bus._deliver(pattern, channel, payload)


class _LinkFactory(Factory):
    noisy = False  # the bus logs its connections itself

    def __init__(self, link: _Link) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        link = self.link
        protocol = link.protocol_class(
            charset=None, replyTimeout=link.bus.timeout, convertNumbers=False
        )
        protocol.factory = self
        protocol.link = link
        protocol.callLater = link.bus.reactor.callLater
        return protocol


class _Link:
    """One of the bus's two connections: kept open, handshaken, and checked by PING.

    ``protocol`` is the connection once its handshake passed, ``None`` otherwise;
    ``current`` is the connection that is open, handshaken or not.
    """

    def __init__(
        self,
        bus: RedisBus,
        name: str,
        protocol_class: type[Any],
        endpoint: IStreamClientEndpoint,
        handshake: Callable[[Any], Sequence[Deferred[Any]]],
    ) -> None:
        self.bus = bus
        self.name = name
        self.protocol_class = protocol_class
        self._handshake = handshake
        self.protocol: Any = None
        self.current: Any = None
        # Connections that opened but failed their handshake in a row: ClientService
        # forgets failed attempts once a TCP connection is made, and a frozen Redis accepts
        # TCP connections, so the backoff counts these too.
        self._rejected = 0
        self._pinging = False
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = bus.reactor
        self.service = ClientService(
            endpoint, _LinkFactory(self), retryPolicy=self._retry_delay, clock=bus.reactor
        )

    def _retry_delay(self, attempt: int) -> float:
        bus = self.bus
        exponent = min(max(attempt, self._rejected + 1) - 1, 30)
        delay = min(bus.retry_initial * 2.0**exponent, bus.retry_max)
        return delay * random.uniform(0.8, 1.2)

    def connection_made(self, protocol: Any) -> None:
        self.current = protocol
        self._rejected += 1
        try:
            steps = self._handshake(protocol)
        except Exception:
            self.bus.log.failure("Redis {link} handshake could not start", link=self.name)
            protocol.transport.abortConnection()
            return
        done = defer.gatherResults(list(steps), consumeErrors=True)
        done.addCallbacks(
            lambda _: self._ready(protocol), lambda failure: self._rejected_by(protocol, failure)
        )

    def _ready(self, protocol: Any) -> None:
        if protocol is not self.current:
            return
        self._rejected = 0
        self.protocol = protocol
        if not self._heartbeat.running:
            self._heartbeat.start(self.bus.heartbeat, now=False)
        self.bus._link_up(self)

    def _rejected_by(self, protocol: Any, failure: Failure) -> None:
        if protocol is not self.current:
            return  # lost meanwhile, and connection_lost said why
        error = failure.value
        if isinstance(error, defer.FirstError):
            error = error.subFailure.value
        self.bus.log.warn(
            "Redis {link} connection to {url} failed its handshake: {error}",
            link=self.name,
            url=self.bus.url.redacted(),
            error=error,
        )
        self.current = None  # said why already; connection_lost need not
        protocol.transport.abortConnection()

    def connection_lost(self, protocol: Any, why: Failure) -> None:
        if protocol is not self.current:
            return
        self.current = None
        if protocol is self.protocol:
            self.protocol = None
            if self._heartbeat.running:
                self._heartbeat.stop()
            self.bus._link_down(self, why)
        elif not self.bus._stopping:
            # Before the handshake's end: a TLS failure (certificate) shows up here.
            self.bus.log.warn(
                "Redis {link} connection to {url} lost before it was usable: {reason}",
                link=self.name,
                url=self.bus.url.redacted(),
                reason=why.getErrorMessage(),
            )

    def _beat(self) -> None:
        protocol = self.protocol
        if protocol is None or self._pinging:
            return
        self._pinging = True

        def failed(failure: Failure) -> None:
            if protocol is self.current:
                self.bus.log.warn(
                    "Redis {link} connection did not answer PING: {error}",
                    link=self.name,
                    error=failure.getErrorMessage(),
                )
                protocol.transport.abortConnection()

        def finished(_: object) -> None:
            self._pinging = False

        try:
            pinged = protocol.execute_command("PING")
        except Exception:
            pinged = defer.fail()
        pinged.addCallbacks(lambda _: None, failed).addBoth(finished)

    def abort(self) -> None:
        """Drop the open connection at once (no graceful close towards a frozen Redis)."""
        if self.current is not None:
            self.current.transport.abortConnection()


@implementer(IBus)
class RedisBus(Service):
    """:class:`IBus` on a Redis server; a :class:`Service` that connects when started.

    ``timeout`` bounds every command and the heartbeat ``PING`` (sent every ``heartbeat``
    seconds on both connections): a Redis that does not answer in time is treated as gone,
    its connection aborted and reconnected with a backoff from ``retry_initial`` doubling up
    to ``retry_max`` seconds. So a frozen Redis makes commands fail within ``timeout`` and
    :attr:`connected` turn ``False`` within ``heartbeat + timeout`` seconds.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str | RedisURL,
        *,
        ca_file: str | Path | None = None,
        timeout: float = 2.0,
        heartbeat: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 4.0,
        connect_timeout: float | None = None,
    ) -> None:
        self.reactor = reactor
        self.url = parse_redis_url(url) if isinstance(url, str) else url
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.connected = False
        self.drops = 0
        self.resubscriptions = 0
        self._observers: list[StateObserver] = []
        self._channels: dict[str, list[Handler]] = {}
        self._patterns: dict[str, list[Handler]] = {}
        self._subscribed_before = False
        self._stopping = False
        self._script_shas: dict[str, str] = {}
        endpoint = self.url.endpoint(reactor, timeout=connect_timeout or timeout, ca_file=ca_file)
        self._commands = _Link(self, "command", _CommandProtocol, endpoint, self._login)
        self._subscriber = _Link(
            self, "subscriber", _SubscriberProtocol, endpoint, self._login_and_subscribe
        )

    # Lifecycle

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._commands.service.startService()
        self._subscriber.service.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        stopped = defer.gatherResults(
            [
                defer.maybeDeferred(link.service.stopService)
                for link in (self._commands, self._subscriber)
            ],
            consumeErrors=True,
        )
        # A frozen Redis never acknowledges a graceful close; don't wait for it.
        aborting = self.reactor.callLater(self.timeout, self._abort_links)
        stopped.addBoth(lambda result: aborting.cancel() if aborting.active() else None)
        return stopped.addCallback(lambda _: None)

    def _abort_links(self) -> None:
        self._commands.abort()
        self._subscriber.abort()

    # Connection state

    def _login(self, protocol: Any) -> list[Deferred[Any]]:
        steps: list[Deferred[Any]] = []
        if self.url.password is not None:
            login = [self.url.username] if self.url.username else []
            steps.append(protocol.execute_command("AUTH", *login, self.url.password))
        if self.url.db and protocol.link is self._commands:
            steps.append(protocol.execute_command("SELECT", self.url.db))
        steps.append(protocol.execute_command("PING"))
        return steps

    def _login_and_subscribe(self, protocol: Any) -> list[Deferred[Any]]:
        # Sent together with the login, without waiting for it: Redis answers in order, and
        # a channel subscribed from now on goes straight to this connection (see subscribe).
        steps = self._login(protocol)
        steps += [protocol.execute_command("SUBSCRIBE", c) for c in self._channels]
        steps += [protocol.execute_command("PSUBSCRIBE", p) for p in self._patterns]
        return steps

    def _link_up(self, link: _Link) -> None:
        if link is self._subscriber:
            if self._subscribed_before:
                self.resubscriptions += 1
                self.log.info(
                    "Redis subscriptions restored ({count} so far)", count=self.resubscriptions
                )
            self._subscribed_before = True
        self._update_state()

    def _link_down(self, link: _Link, why: Failure) -> None:
        if not self._stopping:
            if link is self._subscriber:
                self.drops += 1
            self.log.warn(
                "Redis {link} connection lost ({drops} subscriber drops so far): {reason}",
                link=link.name,
                drops=self.drops,
                reason=why.getErrorMessage(),
            )
        self._update_state()

    def _update_state(self) -> None:
        connected = self._commands.protocol is not None and self._subscriber.protocol is not None
        if connected == self.connected:
            return
        self.connected = connected
        if connected:
            self.log.info("Redis bus up: {url}", url=self.url.redacted())
        elif not self._stopping:
            self.log.warn("Redis bus down: {url}", url=self.url.redacted())
        for observer in list(self._observers):
            try:
                observer(connected)
            except Exception:
                self.log.failure("Redis bus state observer failed")

    def add_observer(self, observer: StateObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: StateObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    # Pub/sub

    def publish(self, channel: str, payload: bytes) -> Deferred[int]:
        return self._command("PUBLISH", channel, payload)

    def subscribe(self, channel: str, handler: Handler) -> Deferred[None]:
        return self._add(self._channels, "SUBSCRIBE", channel, handler)

    def unsubscribe(self, channel: str, handler: Handler) -> Deferred[None]:
        return self._remove(self._channels, "UNSUBSCRIBE", channel, handler)

    def psubscribe(self, pattern: str, handler: Handler) -> Deferred[None]:
        return self._add(self._patterns, "PSUBSCRIBE", pattern, handler)

    def punsubscribe(self, pattern: str, handler: Handler) -> Deferred[None]:
        return self._remove(self._patterns, "PUNSUBSCRIBE", pattern, handler)

    def _add(
        self, registry: dict[str, list[Handler]], command: str, name: str, handler: Handler
    ) -> Deferred[None]:
        handlers = registry.setdefault(name, [])
        handlers.append(handler)
        if len(handlers) > 1:
            return defer.succeed(None)
        return self._subscriber_command(command, name)

    def _remove(
        self, registry: dict[str, list[Handler]], command: str, name: str, handler: Handler
    ) -> Deferred[None]:
        handlers = registry.get(name, [])
        if handler in handlers:
            handlers.remove(handler)
        if handlers or name not in registry:
            return defer.succeed(None)
        del registry[name]
        return self._subscriber_command(command, name)

    def _subscriber_command(self, command: str, name: str) -> Deferred[None]:
        """Send a (un)subscription on the open subscriber connection, if any.

        Its failure means the connection is going away, and the next connection's
        handshake subscribes from the registry anyway: nothing to report.
        """
        protocol = self._subscriber.current
        if protocol is None:
            return defer.succeed(None)
        try:
            sent = protocol.execute_command(command, name)
        except Exception:
            return defer.succeed(None)
        return sent.addCallbacks(lambda _: None, lambda _: None)

    def _deliver(self, pattern: bytes | str | None, channel: bytes | str, payload: bytes) -> None:
        if pattern is None:
            handlers = self._channels.get(_text(channel), [])
        else:
            handlers = self._patterns.get(_text(pattern), [])
        name = _text(channel)
        for handler in list(handlers):
            try:
                handler(name, payload)
            except Exception:
                self.log.failure("Handler for Redis channel {channel} failed", channel=name)

    # Commands

    def _command(self, *args: Any) -> Deferred[Any]:
        protocol = self._commands.protocol
        if protocol is None:
            return defer.fail(BusUnavailable(f"not connected to Redis {self.url.redacted()}"))
        try:
            result = protocol.execute_command(*args)
        except Exception:
            return defer.fail().addErrback(_translate)
        return result.addErrback(_translate)

    def set(self, key: str, value: bytes, px: int | None = None) -> Deferred[None]:
        expiry = () if px is None else ("PX", px)
        return self._command("SET", key, value, *expiry).addCallback(lambda _: None)

    def get(self, key: str) -> Deferred[bytes | None]:
        return self._command("GET", key)

    def mget(self, keys: Sequence[str]) -> Deferred[list[bytes | None]]:
        if not keys:
            return defer.succeed([])
        return self._command("MGET", *keys)

    def delete(self, key: str) -> Deferred[bool]:
        return self._command("DEL", key).addCallback(bool)

    def incr(self, key: str) -> Deferred[int]:
        return self._command("INCR", key)

    async def _scan(self, prefix: str) -> list[str]:
        match = _glob_escape(prefix) + "*"
        found: set[str] = set()
        cursor = "0"
        while True:
            reply = await self._command("SCAN", cursor, "MATCH", match, "COUNT", 1000)
            cursor = str(reply[0] if isinstance(reply[0], int) else _text(reply[0]))
            found.update(_text(key) for key in reply[1])
            if cursor == "0":
                return sorted(found)

    def scan(self, prefix: str) -> Deferred[list[str]]:
        return Deferred.fromCoroutine(self._scan(prefix))

    # Leases

    def acquire_lease(self, key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        taken = self._command("SET", key, token, "NX", "PX", ttl_ms)
        return taken.addCallback(lambda reply: reply is not None)

    def renew_lease(self, key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        return self._script(RENEW_SCRIPT, [key], [token, ttl_ms]).addCallback(bool)

    def release_lease(self, key: str, token: str) -> Deferred[bool]:
        # The script's text, not its SHA1: a daemon releases its leases as it stops, in
        # the same turn as the bus closes its connection, so a NOSCRIPT answer could never
        # be followed by the EVAL; one command, written before the close, is carried out.
        return self._command("EVAL", RELEASE_SCRIPT, 1, key, token).addCallback(bool)

    def _script(self, script: str, keys: list[str], args: list[Any]) -> Deferred[Any]:
        """Run a Lua script by its SHA1, sending its text only if Redis lacks it."""
        sha = self._script_shas.get(script)
        if sha is None:
            sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
            self._script_shas[script] = sha

        def unknown(failure: Failure) -> Deferred[Any] | Failure:
            if failure.check(BusError) and "NOSCRIPT" in failure.getErrorMessage():
                return self._command("EVAL", script, len(keys), *keys, *args)
            return failure

        return self._command("EVALSHA", sha, len(keys), *keys, *args).addErrback(unknown)
