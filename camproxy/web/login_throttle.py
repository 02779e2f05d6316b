"""Throttling failed logins per client address and per user name."""

from __future__ import annotations

from collections import OrderedDict, deque

from twisted.internet.interfaces import IReactorTime


class FailureWindow:
    """Counts failures per key in a sliding window; bounded in keys and in entries."""

    def __init__(
        self, clock: IReactorTime, limit: int, window: float, max_keys: int = 10000
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._clock.seconds() - self._window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        times = self._recent(key)
        if times is None or len(times) < self._limit:
            return 0.0
        return max(1.0, times[-self._limit] + self._window - self._clock.seconds())

    def fail(self, key: str) -> None:
        times = self._recent(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self._limit)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)
        times.append(self._clock.seconds())
        self._failures.move_to_end(key)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class LoginThrottle:
    """At most ``per_user`` failures per user name and ``per_address`` per client address
    within ``window`` seconds; beyond that, logins are refused (HTTP 429) until the
    oldest failure leaves the window."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        per_user: int = 5,
        per_address: int = 20,
        window: float = 300.0,
    ) -> None:
        self._users = FailureWindow(clock, per_user, window)
        self._addresses = FailureWindow(clock, per_address, window)

    def retry_after(self, address: str, username: str) -> float:
        return max(self._addresses.retry_after(address), self._users.retry_after(username.lower()))

    def failed(self, address: str, username: str) -> None:
        self._addresses.fail(address)
        self._users.fail(username.lower())

    def succeeded(self, username: str) -> None:
        self._users.forget(username.lower())
