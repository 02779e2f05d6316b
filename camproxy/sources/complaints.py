"""Keeping a flapping camera from flooding the log: say a thing once, then summarize."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class LogLimiter:
    """Log each distinct complaint at most once per ``interval`` seconds.

    Repeats in between are counted and reported with the next line, so the log says
    what happened and how often without one line per frame.
    """

    def __init__(self, clock: IReactorTime, log: Logger, interval: float = 60.0) -> None:
        self._clock = clock
        self._log = log
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, message: str) -> None:
        now = self._clock.seconds()
        last = self._last.get(message)
        if last is not None and now - last < self._interval:
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return
        self._last[message] = now
        repeats = self._suppressed.pop(message, 0)
        if repeats:
            self._log.warn(
                "{message} (and {repeats} more times in the last {interval:.0f}s)",
                message=message,
                repeats=repeats,
                interval=now - last if last is not None else 0.0,
            )
        else:
            self._log.warn("{message}", message=message)
