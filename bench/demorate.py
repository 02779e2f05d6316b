"""Frames per second that 1, 10 and 100 viewers get from ``twistd camproxy --demo``.

    python bench/demorate.py [--max-fps 25] [--viewers 1,10,100] [--seconds 10]

The demo camera pushes a frame every 150 ms like the firmware and answers ``getframe``;
the daemon paces requests to ``--max-fps``. Prints a Markdown table: frames/s per viewer
(median and worst) and the daemon's CPU seconds per second.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counting(WebSocketClientProtocol):
    frames = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self.frames += 1


async def measure(reactor: Any, args: argparse.Namespace) -> None:
    import treq

    work = Path(tempfile.mkdtemp(prefix="camproxy-demorate-"))
    port = free_port()
    daemon = subprocess.Popen(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "camproxy",
            "--demo",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--max-fps",
            str(args.max_fps),
            "--database",
            str(work / "db"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ADMIN_USERNAME": "bench", "ADMIN_PASSWORD": "bench-pw"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                await (await treq.get(base + "/health")).content()
                break
            except Exception:
                await task.deferLater(reactor, 0.05, lambda: None)
        form_response = await treq.get(base + "/login")
        form = await form_response.text()
        token = re.search(r'name="csrf_token"\s+value="([^"]+)"', form)
        assert token
        # The form's token is bound to the pre-session cookie that came with it.
        pre_session = "; ".join(
            header.split(";", 1)[0]
            for header in form_response.headers.getRawHeaders("Set-Cookie") or []
        )
        form_cookie: dict[bytes | str, bytes | str] = {"Cookie": pre_session}
        answer = await treq.post(
            base + "/login",
            data={"username": "bench", "password": "bench-pw", "csrf_token": token.group(1)},
            headers=form_cookie,
            allow_redirects=False,
        )
        cookie = ""
        for header in answer.headers.getRawHeaders("Set-Cookie") or []:
            morsel = SimpleCookie(header).get("camproxy_session")
            if morsel is not None:
                cookie = morsel.value
        print("| viewers | fps per viewer, median | worst | daemon CPU s/s |")
        print("|---:|---:|---:|---:|")
        for n in args.viewers:
            factory = WebSocketClientFactory(
                url=f"ws://127.0.0.1:{port}/ws",
                reactor=reactor,
                headers={"Cookie": f"camproxy_session={cookie}"},
            )
            factory.protocol = Counting
            viewers: list[Any] = [
                await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
                for _ in range(n)
            ]
            await task.deferLater(reactor, 2.0, lambda: None)  # warm-up
            before = [v.frames for v in viewers]
            cpu_before, started = cpu_seconds(daemon.pid), time.monotonic()
            await task.deferLater(reactor, args.seconds, lambda: None)
            elapsed = time.monotonic() - started
            cpu = (cpu_seconds(daemon.pid) - cpu_before) / elapsed
            rates = [(v.frames - b) / elapsed for v, b in zip(viewers, before, strict=True)]
            print(
                f"| {n} | {statistics.median(rates):.1f} | {min(rates):.1f} | {cpu:.3f} |",
                flush=True,
            )
            for viewer in viewers:
                viewer.sendClose(1000)
            await task.deferLater(reactor, 1.0, lambda: None)
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-fps", type=float, default=25.0)
    parser.add_argument("--viewers", default="1,10,100")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    args.viewers = [int(n) for n in args.viewers.split(",")]
    task.react(lambda reactor: defer.ensureDeferred(measure(reactor, args)))


if __name__ == "__main__":
    main()
