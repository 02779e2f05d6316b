"""Logging: human-readable text or JSON lines, to standard output and ``LOG_FILE``,
filtered by ``LOG_LEVEL``. Installed as twistd's observer (or the ``.tac``'s)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARN": LogLevel.warn,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}
#: Event fields that may carry secrets; never written, whatever a message template does.
REDACTED_FIELDS = ("password", "cookie", "csrf_token", "token", "secret")


def _json_line(event: dict[str, Any]) -> str:
    record: dict[str, Any] = {
        "time": event.get("log_time"),
        "level": event["log_level"].name if "log_level" in event else "info",
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in REDACTED_FIELDS:
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str)


def _text_line(event: dict[str, Any]) -> str | None:
    return formatEventAsClassicLogText(event)


@implementer(ILogObserver)
class StreamObserver:
    """Writes each event as one line (text or JSON) to every stream given."""

    def __init__(self, streams: list[IO[str]], fmt: str) -> None:
        self._streams = streams
        self._format: Callable[[dict[str, Any]], str | None] = (
            (lambda event: _json_line(event) + "\n") if fmt == "json" else _text_line
        )

    def __call__(self, event: dict[str, Any]) -> None:
        line = self._format(event)
        if not line:
            return
        for stream in self._streams:
            stream.write(line)
            stream.flush()


def make_observer(
    *, level: str, fmt: str, primary: IO[str] | None, log_file: str | None
) -> ILogObserver:
    """``primary`` (standard output, or twistd's log file) plus ``LOG_FILE``, filtered."""
    streams: list[IO[str]] = [primary] if primary is not None else []
    if log_file:
        streams.append(LogFile.fromFullPath(log_file))
    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(StreamObserver(streams, fmt), [predicate])


def twistd_primary_stream(nodaemon: bool, logfile: str | None) -> IO[str]:
    """Where twistd itself would log: stdout in the foreground, else ``twistd.log``."""
    if logfile == "-" or (nodaemon and not logfile):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")
