"""The benchmarks' child processes: started with a status-line pipe, read with deadlines,
stopped by PID. Shared by ``run.py`` and ``cluster.py``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


class RunFailed(Exception):
    pass


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """``sig`` by PID, then SIGKILL after ``timeout``; always reaps."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def started(
    argv: list[str], log: Path, stdin: Any = None, **kwargs: Any
) -> Iterator[subprocess.Popen[str]]:
    """A process whose stdout is a pipe (for its status lines) and stderr goes to ``log``;
    ``stdin=subprocess.PIPE`` to send it commands."""
    with open(log, "ab") as err:
        process = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=err, text=True, **kwargs
        )
    try:
        yield process
    finally:
        stop(process)
        for stream in (process.stdout, process.stdin):
            if stream is not None:
                with suppress(BrokenPipeError):
                    stream.close()


def read_line(process: subprocess.Popen[str], deadline: float, what: str) -> str:
    """The process's next status line, or RunFailed at ``deadline`` or when it exits."""
    stream = process.stdout
    assert stream is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RunFailed(f"timed out waiting for {what}")
        ready, _, _ = select.select([stream], [], [], min(remaining, 1.0))
        if ready:
            line = stream.readline()
            if not line:
                raise RunFailed(f"process exited ({process.poll()}) before {what}")
            return line.strip()
        if process.poll() is not None:
            raise RunFailed(f"process exited ({process.returncode}) before {what}")


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
