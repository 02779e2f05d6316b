"""A token bucket: how many messages a viewer may send, on average and in a burst."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class TokenBucket:
    """Allow ``rate`` events a second on average, with bursts of up to ``burst``."""

    def __init__(self, clock: IReactorTime, rate: float, burst: float) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = clock.seconds()

    def take(self) -> bool:
        """Spend one token if there is one; False means over the limit."""
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
