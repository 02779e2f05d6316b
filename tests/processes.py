"""Starting CamProxy processes for tests: free ports, readiness, stop by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for_health(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> Any:
    """Poll /health until it answers (no event crosses the process boundary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daemon exited with {process.returncode}")
        try:
            return get_json(f"http://127.0.0.1:{port}/health", timeout=1.0)[1]
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("daemon did not answer /health")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running(
    argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the duration of a ``with`` block, then stop it by its PID.

    Its output goes to a file (``process.log_path``), never to a pipe nobody reads: a
    chatty daemon would block once the pipe's buffer is full.
    """
    with tempfile.NamedTemporaryFile(
        prefix="camproxy-process-", suffix=".log", delete=False
    ) as log:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process.log_path = Path(log.name)  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        stop(process)
        Path(log.name).unlink(missing_ok=True)


def twistd(*args: str) -> list[str]:
    return [str(BIN / "twistd"), "-n", "--pidfile=", "camproxy", *args]
