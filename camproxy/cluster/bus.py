"""The message bus that the daemons of one CamProxy share, as an interface.

The cluster needs few things from Redis (CONTRACT §8):

- **Ownership.** One lease per camera: :meth:`IBus.acquire_lease` is ``SET key token NX PX
  ttl``; :meth:`IBus.renew_lease` and :meth:`IBus.release_lease` only act while the key still
  holds the caller's token, so a daemon whose lease expired can never extend or delete the
  next holder's. A fencing epoch (:meth:`IBus.incr`) is stamped on every frame.
- **Frames and events.** :meth:`IBus.publish` once per frame or event; :meth:`IBus.subscribe`
  (one channel) and :meth:`IBus.psubscribe` (a glob pattern) deliver them to every daemon.
- **Counts and status.** Per-daemon values under keys with an expiry (:meth:`IBus.set`,
  :meth:`IBus.scan`, :meth:`IBus.mget`).

Two implementations: :class:`~camproxy.cluster.redisbus.RedisBus` and the in-memory
:class:`~camproxy.cluster.memorybus.MemoryBus` for unit tests.

Pub/sub is at most once: a message published while a subscriber's connection is down (or
while Redis drops it for reading too slowly) is lost for that subscriber. Subscriptions
survive reconnects; :attr:`IBus.drops` and :attr:`IBus.resubscriptions` count them, and the
"up" observers are told only once the subscriptions are active again, so a daemon can
re-read what it may have missed (the newest frame, the leases) when the bus comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

#: Receives one pub/sub message: the channel it was published on, and its payload.
Handler = Callable[[str, bytes], object]

#: Told ``True`` when the bus comes up and ``False`` when it goes down.
StateObserver = Callable[[bool], object]


class BusError(Exception):
    """The bus refused or could not carry out a command."""


class BusUnavailable(BusError):
    """The bus is not connected, or lost its connection before the command's answer."""


class BusTimeout(BusUnavailable):
    """The server did not answer in time (it may be frozen or overloaded)."""


class IBus(Interface):
    """The cluster's message bus: pub/sub, leases, counters and short-lived keys.

    Every command returns a :class:`Deferred` that fails with :class:`BusUnavailable`
    promptly while the bus is down, and with :class:`BusTimeout` when the server does not
    answer in time; none waits for the bus to come back. Keys and channels are ``str``;
    values and payloads are ``bytes`` and round-trip byte for byte.
    """

    connected = Attribute(
        "bool: True while both the command and the subscriber connections are up, "
        "answering, and every subscription is active."
    )
    drops = Attribute(
        "int: how many times a working subscriber connection was lost (Redis restarted, "
        "froze, or dropped a subscriber that read too slowly)."
    )
    resubscriptions = Attribute(
        "int: how many times the subscriptions were restored on a new subscriber "
        "connection after a drop."
    )

    def add_observer(observer: StateObserver) -> None:
        """Call ``observer(True)`` each time the bus comes up, ``observer(False)`` each
        time it goes down (transitions only, not the current state)."""

    def remove_observer(observer: StateObserver) -> None:
        """Stop telling ``observer``; a no-op if it was not added."""

    def publish(channel: str, payload: bytes) -> Deferred[int]:
        """Send ``payload`` to every subscriber of ``channel``; fires with the number of
        receivers as Redis counts them: one per daemon subscribed to the channel, plus one
        per matching pattern subscription (0: nobody listens)."""

    def subscribe(channel: str, handler: Handler) -> Deferred[None]:
        """Call ``handler(channel, payload)`` for each message on ``channel``, across
        reconnects, until :meth:`unsubscribe`. Fires once the server confirmed the
        subscription, or at once while the bus is down (it is made when the bus comes
        up); never fails."""

    def unsubscribe(channel: str, handler: Handler) -> Deferred[None]:
        """Undo one :meth:`subscribe`; never fails."""

    def psubscribe(pattern: str, handler: Handler) -> Deferred[None]:
        """Like :meth:`subscribe`, for every channel matching the glob ``pattern``
        (``*``, ``?``, ``[...]``); the handler is told the actual channel."""

    def punsubscribe(pattern: str, handler: Handler) -> Deferred[None]:
        """Undo one :meth:`psubscribe`; never fails."""

    def set(key: str, value: bytes, px: int | None = None) -> Deferred[None]:
        """Store ``value`` under ``key``, expiring after ``px`` milliseconds if given."""

    def get(key: str) -> Deferred[bytes | None]:
        """The value under ``key``, or ``None`` if there is none (or it expired)."""

    def mget(keys: Sequence[str]) -> Deferred[list[bytes | None]]:
        """The values under ``keys``, in order, ``None`` for each missing one."""

    def delete(key: str) -> Deferred[bool]:
        """Remove ``key``; fires with whether it existed."""

    def incr(key: str) -> Deferred[int]:
        """Add one to the integer under ``key`` (0 if missing) and fire with the result:
        the fencing epoch of a camera."""

    def scan(prefix: str) -> Deferred[list[str]]:
        """Every key that starts with ``prefix`` (no glob: the prefix is literal), in no
        particular order. Walks the keyspace with ``SCAN``, so use it for status pages,
        not once per frame."""

    def acquire_lease(key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        """Take the lease ``key`` for ``token`` for ``ttl_ms`` milliseconds if nobody holds
        it; fires with whether it was taken (``False`` while anyone holds it, the caller
        included)."""

    def renew_lease(key: str, token: str, ttl_ms: int) -> Deferred[bool]:
        """Extend the lease ``key`` to ``ttl_ms`` milliseconds from now if ``token`` still
        holds it; fires with whether it did (``False``: the lease was lost)."""

    def release_lease(key: str, token: str) -> Deferred[bool]:
        """Give up the lease ``key`` if ``token`` holds it; fires with whether it did."""
