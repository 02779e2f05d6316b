"""Viewers on one daemon of a cluster, for ``cluster.py``: the window comes from outside.

The same socket reader as ``viewerload.py`` (its :class:`~viewerload.Viewer`: an asyncio
``BufferedProtocol`` per socket, one shared buffer, only each message's head parsed),
but driven by the caller, so that several of these processes, one per daemon, measure
one window in the camera's time:

- it takes the session cookies from ``--cookies`` (one per line; ``cluster.py`` logs in
  once, and the sessions are good on every daemon of the cluster), opens ``--n``
  sockets on ``--port`` (``--concurrency`` handshakes at a time), waits for the joins to
  settle, and says so;
- then it reads commands on standard input: ``WINDOW t0_ns t1_ns`` (count the frames
  stamped in ``[t0, t1)``, as ``viewerload`` does) and ``STOP`` (wait until every viewer
  saw a frame stamped after the window, at most ``--grace-max`` s, write the results to
  ``--out``, exit);
- with ``--record`` every viewer also keeps the receive time (``time.monotonic``, one
  clock for every process on Linux) and the stamp of every frame, from its first frame
  to ``STOP``: the failover runs read the gap in them.

Protocol on standard output: ``CONNECTED ok failed seconds``, ``SETTLED seconds``,
``DONE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchlib as wl
import viewerload as vl

monotonic = time.monotonic


class RecordingViewer(vl.Viewer):
    """A fast viewer that can also keep ``(receive time, stamp)`` of every frame."""

    def __init__(self, request: bytes, opened: asyncio.Future[vl.Viewer], record: bool) -> None:
        super().__init__(request, vl.FAST, opened)
        self.record = record
        self.received: list[tuple[float, int]] = []

    def finish(self) -> None:
        stamp = self.t
        super().finish()
        if self.record and stamp > 0:
            self.received.append((monotonic(), stamp))


async def connect_all(
    port: int, n: int, cookies: list[str], concurrency: int, timeout: float, record: bool
) -> tuple[list[RecordingViewer], list[str]]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency or n or 1)
    viewers: list[RecordingViewer] = []
    failures: list[str] = []

    async def one(index: int) -> None:
        extra = f"Origin: http://127.0.0.1:{port}\r\nCookie: {cookies[index % len(cookies)]}\r\n"
        request = wl.upgrade_request("127.0.0.1", port, "/ws", extra)
        async with gate:
            opened: asyncio.Future[vl.Viewer] = loop.create_future()
            viewer = RecordingViewer(request, opened, record)
            viewer.started = monotonic()
            try:
                await loop.create_connection(lambda: viewer, "127.0.0.1", port)
                await asyncio.wait_for(opened, timeout=timeout)
                viewers.append(viewer)
            except (OSError, ConnectionError, TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(i) for i in range(n)))
    return viewers, failures


async def commands() -> Any:
    """The lines of standard input, one at a time (a thread reads them)."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line.split()


def p99(values: list[int]) -> float | None:
    return vl.percentiles(sorted(values), (99,))["p99"] if values else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cookies = [c.strip() for c in Path(args.cookies).read_text().splitlines() if c.strip()]
    began = monotonic()
    viewers, failures = await connect_all(
        args.port, args.n, cookies, args.concurrency, args.handshake_timeout, args.record
    )
    connected = monotonic()
    if failures:
        print(f"clusterload: {len(failures)} sockets failed, e.g. {failures[0]}", file=sys.stderr)
    print(f"CONNECTED {len(viewers)} {len(failures)} {connected - began:.2f}", flush=True)
    settled = (
        await vl.settle(list[vl.Viewer](viewers), args.settle_ms, args.settle_max)
        if viewers
        else 0.0
    )
    print(f"SETTLED {settled:.3f}", flush=True)
    async for words in commands():
        if words[:1] == ["WINDOW"]:
            vl.T0, vl.T1 = int(words[1]), int(words[2])
        elif words[:1] == ["STOP"]:
            break
    grace_began = monotonic()
    if vl.T1 != vl.NEVER:
        while vl.time_ns() < vl.T1 + 200_000_000:
            await asyncio.sleep(0.05)
        deadline = grace_began + args.grace_max
        while monotonic() < deadline and any(v.last_t < vl.T1 and not v.closed for v in viewers):
            await asyncio.sleep(0.05)
    latencies = [lat for v in viewers for lat in v.lat]
    result: dict[str, Any] = {
        "port": args.port,
        "n": args.n,
        "connected": len(viewers),
        "failed": len(failures),
        "connect_s": connected - began,
        "settle_s": settled,
        "grace_s": monotonic() - grace_began,
        "t0_ns": vl.T0,
        "t1_ns": vl.T1,
        "frames": [v.frames for v in viewers],
        "closed": sum(v.closed for v in viewers),
        "texts": sum(v.texts for v in viewers),
        "latency_ms": vl.percentiles(latencies, (50, 90, 99, 99.9)),
        "worst_viewer_p99_ms": max((p99(v.lat) or 0.0 for v in viewers), default=None),
        "median_viewer_p50_ms": statistics.median(
            vl.percentiles(sorted(v.lat), (50,))["p50"] or 0.0 for v in viewers if v.lat
        )
        if any(v.lat for v in viewers)
        else None,
        "loop": type(asyncio.get_running_loop()).__module__,
    }
    if args.record:
        result["received"] = [v.received for v in viewers]
    for viewer in viewers:
        viewer.transport.abort()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True, help="viewers")
    parser.add_argument("--cookies", required=True, help="a file: one Cookie header per line")
    parser.add_argument("--record", action="store_true", help="keep every frame's time")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes at once")
    parser.add_argument("--handshake-timeout", type=float, default=60.0)
    parser.add_argument("--settle-ms", type=float, default=100.0)
    parser.add_argument("--settle-max", type=float, default=90.0)
    parser.add_argument("--grace-max", type=float, default=15.0)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    wl.raise_nofile(args.n + 256)
    use_uvloop = args.loop != "asyncio"
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                raise
            use_uvloop = False
    result = uvloop.run(run(args)) if use_uvloop else asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
