"""Soak test: many viewers joining and leaving, a flapping camera, logins meanwhile.

    python bench/soak.py --duration 600 --viewers 200 --flap 60

Starts the demo camera (``python -m camproxy.democam --flap-interval``) and the daemon
as processes on 127.0.0.1, drives viewers and logins from this process, and reports
errors, frames, and the daemon's RSS at start and end as JSON (and a summary line).
Exit status 0 when it ran and saw no errors; 1 otherwise. Speed never fails it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint

BIN = Path(sys.executable).parent
CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
#: Close codes that are part of normal life here: ours (1000), server going away (1001).
NORMAL_CLOSES = {1000, 1001}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Tally:
    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.frames = 0
        self.invalid_frames = 0
        self.connects = 0
        self.logins = 0


class SoakViewer(WebSocketClientProtocol):
    factory: SoakFactory

    def onOpen(self) -> None:
        self.factory.tally.connects += 1
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            if payload[:2] == b"\xff\xd8" and payload[-2:] == b"\xff\xd9":
                self.factory.tally.frames += 1
            else:
                self.factory.tally.invalid_frames += 1
        else:
            message = json.loads(payload)
            if message.get("type") == "error":
                self.factory.tally.errors["error message: " + message.get("message", "")] += 1

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))
        elif code not in NORMAL_CLOSES and not self.factory.closing:
            self.factory.tally.errors[f"closed {code}: {reason}"] += 1
        if not self.factory.closed.called:
            self.factory.closed.callback(None)


class SoakFactory(WebSocketClientFactory):
    protocol = SoakViewer  # type: ignore[assignment]

    def __init__(self, tally: Tally, **kw: Any) -> None:
        super().__init__(**kw)
        self.tally = tally
        self.opened: defer.Deferred[SoakViewer] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.closing = False


async def login(reactor: Any, base: str, user: str, password: str) -> str:
    import treq

    form = await treq.get(base + "/login")
    token = CSRF.search(await form.text())
    assert token, "no csrf token"
    # The form's token is bound to the pre-session cookie that came with it.
    pre_session = "; ".join(
        header.split(";", 1)[0] for header in form.headers.getRawHeaders("Set-Cookie") or []
    )
    cookie: dict[bytes | str, bytes | str] = {"Cookie": pre_session}
    response = await treq.post(
        base + "/login",
        data={"username": user, "password": password, "csrf_token": token.group(1)},
        headers=cookie,
        allow_redirects=False,
    )
    await response.content()
    session = None
    for header in response.headers.getRawHeaders("Set-Cookie") or []:
        morsel = SimpleCookie(header).get("camproxy_session")
        if morsel is not None:
            session = morsel.value
    if response.code != 302 or not session:
        raise RuntimeError(f"login answered {response.code}")
    return str(session)


async def viewer_life(
    reactor: Any, port: int, cookie: str, tally: Tally, until: float, rng: random.Random
) -> None:
    """Connect, watch a while, leave, pause, again, until the end."""
    while reactor.seconds() < until:
        factory = SoakFactory(
            tally,
            url=f"ws://127.0.0.1:{port}/ws",
            reactor=reactor,
            headers={"Cookie": f"camproxy_session={cookie}"},
        )
        factory.setProtocolOptions(failByDrop=False, openHandshakeTimeout=10)
        try:
            await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
            protocol = await factory.opened
        except Exception as problem:
            tally.errors[f"connect failed: {type(problem).__name__}"] += 1
            await task.deferLater(reactor, 1.0, lambda: None)
            continue
        stay = min(rng.uniform(3, 30), max(0.0, until - reactor.seconds()))
        await task.deferLater(reactor, stay, lambda: None)
        factory.closing = True
        protocol.sendClose(1000)
        await factory.closed
        await task.deferLater(reactor, rng.uniform(0.2, 3), lambda: None)


async def background_logins(reactor: Any, base: str, tally: Tally, until: float) -> None:
    while reactor.seconds() < until:
        try:
            await login(reactor, base, "soak", "soak-password")
            tally.logins += 1
        except Exception as problem:
            tally.errors[f"login failed: {problem}"] += 1
        await task.deferLater(reactor, 1.0, lambda: None)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def soak(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    import treq

    work = Path(tempfile.mkdtemp(prefix="camproxy-soak-"))
    database = str(work / "soak.db")
    subprocess.run(
        [
            str(BIN / "camproxy"),
            "user",
            "add",
            "soak",
            "--admin",
            "--password-stdin",
            "--database",
            database,
        ],
        input="soak-password\n",
        text=True,
        check=True,
        capture_output=True,
    )
    camera_port, port = free_port(), free_port()
    logs = {name: open(work / f"{name}.log", "wb") for name in ("camera", "daemon")}  # noqa: SIM115
    camera = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "camproxy.democam",
            "--listen",
            f"tcp:{camera_port}:interface=127.0.0.1",
            "--flap-interval",
            str(args.flap),
        ],
        stdout=logs["camera"],
        stderr=subprocess.STDOUT,
    )
    daemon = subprocess.Popen(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "camproxy",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--camera",
            f"ws://127.0.0.1:{camera_port}/ws",
            "--database",
            database,
            "--max-fps",
            str(args.fps),
            "--metrics-allow",
            "127.0.0.1",
        ],
        stdout=logs["daemon"],
        stderr=subprocess.STDOUT,
        cwd=work,
        env={**os.environ, "SECRET_KEY": "soak"},
    )
    base = f"http://127.0.0.1:{port}"
    tally = Tally()
    try:
        for _ in range(200):
            try:
                await treq.get(base + "/health")
                break
            except Exception:
                await task.deferLater(reactor, 0.05, lambda: None)
        rss_start = rss_kib(daemon.pid)
        cookies = [await login(reactor, base, "soak", "soak-password") for _ in range(10)]
        started = reactor.seconds()
        until = started + args.duration
        rng = random.Random(args.seed)
        lives = [
            defer.ensureDeferred(
                viewer_life(reactor, port, cookies[n % len(cookies)], tally, until, rng)
            )
            for n in range(args.viewers)
        ]
        lives.append(defer.ensureDeferred(background_logins(reactor, base, tally, until)))
        health_worst = 0.0
        rss_samples: list[tuple[float, float]] = []
        while reactor.seconds() < until:
            if not rss_samples or reactor.seconds() - started - rss_samples[-1][0] >= 30:
                rss_samples.append(
                    (round(reactor.seconds() - started), round(rss_kib(daemon.pid) / 1024, 1))
                )
            before = time.perf_counter()
            response = await treq.get(base + "/health")
            await response.content()
            health_worst = max(health_worst, time.perf_counter() - before)
            if daemon.poll() is not None:
                tally.errors["daemon exited"] += 1
                break
            await task.deferLater(reactor, 1.0, lambda: None)
        await defer.DeferredList(lives, consumeErrors=True)
        metrics = await (await treq.get(base + "/metrics")).text()
        rss_end = rss_kib(daemon.pid)
        elapsed = reactor.seconds() - started
    finally:
        for process in (daemon, camera):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
        for log in logs.values():
            log.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "duration_s": round(elapsed, 1),
        "viewers": args.viewers,
        "viewer_connects": tally.connects,
        "logins": tally.logins,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors.most_common(10)),
        "frames_from_camera": metric(metrics, "camproxy_frames_received_total"),
        "frames_delivered_to_viewers": tally.frames,
        "frames_sent_by_daemon": metric(metrics, "camproxy_frames_sent_total"),
        "frames_skipped_by_daemon": metric(metrics, "camproxy_frames_skipped_total"),
        # Written by the daemon but never read: frames in flight to viewers as they left.
        "frames_lost": metric(metrics, "camproxy_frames_sent_total") - tally.frames,
        "invalid_frames_at_viewers": tally.invalid_frames,
        "camera_connects": metric(metrics, "camproxy_camera_connects_total"),
        "health_worst_ms": round(health_worst * 1000, 1),
        "rss_start_mib": round(rss_start / 1024, 1),
        "rss_end_mib": round(rss_end / 1024, 1),
        "rss_every_30s_mib": [mib for _, mib in rss_samples],
        "workdir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--flap", type=float, default=60.0, help="camera drops every N s")
    parser.add_argument("--fps", type=float, default=5.0, help="the daemon's --max-fps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="also write the report (JSON) here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and logs")
    args = parser.parse_args(argv)

    async def run(reactor: Any) -> None:
        report = await soak(reactor, args)
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(
            f"soak: {report['duration_s']} s, {report['viewer_connects']} viewer connects, "
            f"{report['logins']} logins, {report['errors']} errors, "
            f"{report['frames_lost']:.0f} frames lost, "
            f"{report['invalid_frames_at_viewers']} invalid, "
            f"RSS {report['rss_start_mib']} -> {report['rss_end_mib']} MiB"
        )
        if report["errors"] or report["invalid_frames_at_viewers"]:
            raise SystemExit(1)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
