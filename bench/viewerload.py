"""N WebSocket viewers in one process, for the load benchmark.

Logs in like a browser (GET /login, the form's ``csrf_token``, POST /login, keep the
``camproxy_session`` cookie; one login per user, each session shared by several sockets),
opens N sockets on ``/ws`` and counts every binary message, reading its send stamp (see
``benchlib``) to get the added latency. ``--no-login`` skips the login, for the bare relay.

It is built to cost little CPU, since it shares the machine with the daemon: an asyncio
``BufferedProtocol`` per socket (uvloop when installed) reading into one shared buffer,
and a parser that only looks at each message's header and first 55 payload bytes and
skips the rest without copying it.

Protocol on standard output (one line each, for ``run.py``):
``CONNECTED ok failed seconds``, ``WINDOW_START t0_ns``, ``WINDOW_END t1_ns``, ``DONE``;
the results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import time
import urllib.parse
from typing import Any, cast

import benchlib as wl

HEAD = 256
SHARED = bytearray(1 << 18)
SHARED_VIEW = memoryview(SHARED)
NEVER = 1 << 62
#: The measuring window in send-stamp time: frames stamped in [T0, T1) are counted.
T0 = NEVER
T1 = NEVER
PREFIX = wl.STAMP_PREFIX
P_AT, T_AT, STAMP_HEAD = wl.STAMP_PREFIX_AT, wl.STAMP_T_AT, wl.STAMP_HEAD
CSRF_FIELD = re.compile(rb'name="csrf_token"\s+value="([^"]+)"')
time_ns = time.time_ns


class Viewer(asyncio.BufferedProtocol):
    """One socket: handshake, then a minimal frame parser that skips payloads."""

    transport: asyncio.Transport

    def __init__(self, request: bytes, slow: bool, opened: asyncio.Future[Viewer]) -> None:
        self.request = request
        self.slow = slow
        self.opened = opened
        self.handshake = bytearray()
        self.is_open = False
        self.closed = False
        self.skip = 0
        self.t = 0
        self.pend = b""
        self.frames = 0
        self.total = 0
        self.texts = 0
        self.pings = 0
        self.last_t = 0
        self.last_lat = 0
        self.lat: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the handshake: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.is_open:
            self.feed(0, nbytes)
        else:
            self.handshake_data(nbytes)

    def handshake_data(self, nbytes: int) -> None:
        self.handshake += SHARED_VIEW[:nbytes]
        end = self.handshake.find(b"\r\n\r\n")
        if end < 0:
            if len(self.handshake) > 65536:
                self.transport.abort()
            return
        status = bytes(self.handshake[: self.handshake.find(b"\r\n")])
        if not status.startswith(b"HTTP/1.1 101"):
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(status.decode("latin-1")))
            self.transport.abort()
            return
        rest = bytes(self.handshake[end + 4 :])
        self.handshake = bytearray()
        self.is_open = True
        if self.slow:
            self.transport.pause_reading()
        if not self.opened.done():
            self.opened.set_result(self)
        if rest:
            SHARED[: len(rest)] = rest
            self.feed(0, len(rest))

    def feed(self, pos: int, n: int) -> None:
        buf = SHARED
        while pos < n:
            skip = self.skip
            if skip:
                avail = n - pos
                if skip > avail:
                    self.skip = skip - avail
                    return
                pos += skip
                self.skip = 0
                if self.t:
                    self.finish()
                continue
            base = len(self.pend)
            if base:
                head: bytes | bytearray = self.pend + buf[pos : pos + HEAD]
            else:
                head = buf[pos : pos + HEAD]
            have = len(head)
            if have < 2:
                self.pend = bytes(head)
                return
            length = head[1] & 0x7F
            if length < 126:
                hl = 2
            elif length == 126:
                if have < 4:
                    self.pend = bytes(head)
                    return
                length, hl = (head[2] << 8) | head[3], 4
            else:
                if have < 10:
                    self.pend = bytes(head)
                    return
                length, hl = int.from_bytes(head[2:10], "big"), 10
            op = head[0] & 0x0F
            if op == wl.OP_BINARY:
                if length >= STAMP_HEAD:
                    if have < hl + STAMP_HEAD:
                        self.pend = bytes(head)
                        return
                    if head[hl + P_AT : hl + T_AT] == PREFIX:
                        self.t = int(head[hl + T_AT : hl + T_AT + 19])
                    else:
                        self.t = -1
                else:
                    self.t = -1
            elif op >= wl.OP_CLOSE:
                if have < hl + length:
                    self.pend = bytes(head)
                    return
                self.control(op, bytes(head[hl : hl + length]))
            elif op == wl.OP_TEXT:
                self.texts += 1
            self.pend = b""
            if base >= hl:
                remaining = length - (base - hl)
            else:
                pos += hl - base
                remaining = length
            if remaining:
                self.skip = remaining
            elif self.t:
                self.finish()

    def finish(self) -> None:
        t = self.t
        self.t = 0
        self.total += 1
        self.last_t = t
        self.last_lat = lat = time_ns() - t
        if T0 <= t < T1:
            self.frames += 1
            self.lat.append(lat)

    def control(self, op: int, payload: bytes) -> None:
        if op == wl.OP_PING:
            self.pings += 1
            self.transport.write(wl.client_frame(wl.OP_PONG, payload))
        elif op == wl.OP_CLOSE and not self.closed:
            self.closed = True
            self.transport.write(wl.client_frame(wl.OP_CLOSE, payload[:2]))
            self.transport.close()


async def http(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Any:
    """A one-shot HTTP/1.0 request; returns (status, [set-cookie values], body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.0", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    try:
        data = await asyncio.wait_for(reader.read(), timeout=60)
    finally:
        writer.close()
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    cookies = [
        line.split(":", 1)[1].strip()
        for line in header_lines
        if line.lower().startswith("set-cookie:")
    ]
    return int(status_line.split()[1]), cookies, content


async def login(port: int, username: str, password: str) -> str:
    """Log in like a browser; returns the ``Cookie`` header value for the session."""
    jar: dict[str, str] = {}

    def keep(cookies: list[str]) -> None:
        for cookie in cookies:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            jar[name.strip()] = value.strip()

    def cookie_header() -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}

    status, cookies, page = await http(port, "GET", "/login", cookie_header())
    keep(cookies)
    found = CSRF_FIELD.search(page)
    if status != 200 or not found:
        raise RuntimeError(f"GET /login answered {status} without a csrf_token")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrf_token": found.group(1).decode()}
    ).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": f"http://127.0.0.1:{port}",
        **cookie_header(),
    }
    status, cookies, _ = await http(port, "POST", "/login", headers, form)
    keep(cookies)
    if status != 302 or "camproxy_session" not in jar:
        raise RuntimeError(f"POST /login for {username} answered {status} without a session")
    return f"camproxy_session={jar['camproxy_session']}"


async def connect_all(args: argparse.Namespace, cookies: list[str | None]) -> list[Viewer]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(args.concurrency)
    total = args.n + args.slow
    viewers: list[Viewer] = []
    failures: list[str] = []

    async def one(index: int) -> None:
        cookie = cookies[index % len(cookies)]
        extra = f"Origin: http://127.0.0.1:{args.port}\r\n"
        if cookie:
            extra += f"Cookie: {cookie}\r\n"
        request = wl.upgrade_request("127.0.0.1", args.port, "/ws", extra)
        # The slow ones are spread among the fast ones, not all at the end of the list.
        step = max(1, total // args.slow) if args.slow else 0
        slow = bool(step) and index % step == 0 and index // step < args.slow
        async with gate:
            opened: asyncio.Future[Viewer] = loop.create_future()
            try:
                if slow and args.slow_rcvbuf:
                    # A small receive window, like a phone on a bad link: without it the
                    # kernel would swallow tens of MB for a viewer that never reads, and
                    # the daemon would never see it stall within the window.
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.slow_rcvbuf)
                    sock.setblocking(False)
                    await loop.sock_connect(sock, ("127.0.0.1", args.port))
                    await loop.create_connection(lambda: Viewer(request, slow, opened), sock=sock)
                else:
                    await loop.create_connection(
                        lambda: Viewer(request, slow, opened), "127.0.0.1", args.port
                    )
                viewers.append(await asyncio.wait_for(opened, timeout=args.handshake_timeout))
            except (OSError, ConnectionError, TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(i) for i in range(total)))
    if failures:
        print(f"viewerload: {len(failures)} sockets failed, e.g. {failures[0]}", file=sys.stderr)
    return viewers


async def settle(viewers: list[Viewer], below_ms: float, limit: float) -> float:
    """Wait (at most ``limit`` s) for the joins' backlog to drain.

    Every join sends ``client_count`` to every viewer, and frames queue behind that
    burst (in the daemon and in the kernel's socket buffers); a daemon near its limit
    takes many seconds to catch up. Settled: no text message for half a second, and the
    viewers' latest-frame latency (median over viewers, averaged over a second) below
    ``below_ms``. A daemon that cannot keep up never settles: then the wait ends at
    ``limit`` and the window measures it as it is.
    """
    began = time.monotonic()
    fast = [v for v in viewers if not v.slow] or viewers
    texts = -1
    history: list[float] = []
    while time.monotonic() - began < limit:
        await asyncio.sleep(0.25)
        count = sum(v.texts for v in viewers)
        if count != texts:
            texts, history = count, []
            continue
        history.append(statistics.median(v.last_lat for v in fast) / 1e6)
        if len(history) >= 4 and statistics.fmean(history[-4:]) < below_ms:
            break
    return time.monotonic() - began


def percentiles(values: list[int], points: tuple[float, ...]) -> dict[str, float | None]:
    if not values:
        empty: dict[str, float | None] = {f"p{p:g}": None for p in points}
        empty["max"] = None
        return empty
    values.sort()
    last = len(values) - 1
    found: dict[str, float | None] = {
        f"p{p:g}": values[min(last, round(p / 100 * last))] / 1e6 for p in points
    }
    found["max"] = values[-1] / 1e6
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global T0, T1
    started = time.monotonic()
    cookies: list[str | None] = [None]
    if args.users:
        pairs = [u.split(":", 1) for u in args.users.split(",")]
        cookies = list(await asyncio.gather(*(login(args.port, u, p) for u, p in pairs)))
    logged_in = time.monotonic()
    viewers = await connect_all(args, cookies)
    connected = time.monotonic()
    failed = args.n + args.slow - len(viewers)
    print(f"CONNECTED {len(viewers)} {failed} {connected - started:.2f}", flush=True)
    # Every join sends client_count to every viewer: let that burst drain first.
    settled = await settle(viewers, args.settle_ms, args.settle_max)
    await asyncio.sleep(args.warmup)
    T0 = time_ns()
    print(f"WINDOW_START {T0}", flush=True)
    await asyncio.sleep(args.duration)
    T1 = time_ns()
    print(f"WINDOW_END {T1}", flush=True)
    fast = [v for v in viewers if not v.slow]
    slow = [v for v in viewers if v.slow]
    # Frames stamped inside the window may still be on their way: wait until every
    # fast viewer has seen a later one (frames arrive in order) or gave up.
    waited = time.monotonic()
    await asyncio.sleep(args.grace)
    deadline = waited + args.grace_max
    while time.monotonic() < deadline and any(v.last_t < T1 and not v.closed for v in fast):
        await asyncio.sleep(0.1)
    grace = time.monotonic() - waited
    latencies = [lat for v in fast for lat in v.lat]
    first = [lat for v in fast for lat in v.lat[:25]]
    last = [lat for v in fast for lat in v.lat[-25:]]
    per_viewer_p99 = sorted(
        sorted(v.lat)[min(len(v.lat) - 1, round(0.99 * (len(v.lat) - 1)))] / 1e6
        for v in fast
        if v.lat
    )
    result = {
        "t0_ns": T0,
        "t1_ns": T1,
        "login_seconds": logged_in - started,
        "connect_seconds": connected - logged_in,
        "connected": len(viewers),
        "failed": failed,
        "fast_frames": [v.frames for v in fast],
        "slow_frames": [v.frames for v in slow],
        "fast_closed": sum(v.closed for v in fast),
        "slow_closed": sum(v.closed for v in slow),
        "texts": sum(v.texts for v in viewers),
        "pings": sum(v.pings for v in viewers),
        "latency_ms": percentiles(latencies, (50, 90, 99, 99.9)),
        "latency_first_s_ms": percentiles(first, (50, 99)),
        "latency_last_s_ms": percentiles(last, (50, 99)),
        "settle_s": settled,
        "grace_s": grace,
        "worst_viewer_p99_ms": per_viewer_p99[-1] if per_viewer_p99 else None,
        "loop": type(asyncio.get_running_loop()).__module__,
    }
    for viewer in viewers:
        viewer.transport.abort()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True, help="viewers that read")
    parser.add_argument("--slow", type=int, default=0, help="extra viewers that never read")
    parser.add_argument(
        "--slow-rcvbuf", type=int, default=16384, help="SO_RCVBUF of the slow ones (0: default)"
    )
    parser.add_argument("--users", default="", help="user:password,... (empty: no login)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=0.5, help="s to wait after the window")
    parser.add_argument("--grace-max", type=float, default=15.0, help="... for late frames")
    parser.add_argument(
        "--settle-ms", type=float, default=100.0, help="settled: frame latency below this"
    )
    parser.add_argument("--settle-max", type=float, default=90.0, help="s for joins to drain")
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes at once")
    parser.add_argument("--handshake-timeout", type=float, default=60.0)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    wl.raise_nofile(args.n + args.slow + 256)
    use_uvloop = args.loop == "uvloop"
    if args.loop == "auto":
        try:
            import uvloop

            use_uvloop = True
        except ImportError:
            use_uvloop = False
    if use_uvloop:
        import uvloop

        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    with open(args.out, "w") as out:
        json.dump(result, out)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
