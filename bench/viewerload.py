"""N WebSocket viewers in one process, for the load benchmark.

Logs in like a browser (GET /login, the form's ``csrf_token``, POST /login, keep the
``camproxy_session`` cookie; one login per user, each session shared by several sockets),
opens N sockets on ``/ws`` and counts every binary message, reading its send stamp (see
``benchlib``) to get the added latency. ``--users ""`` skips the login, for the bare relay.
``--paths /cam/a/ws,/cam/b/ws`` spreads the sockets over several cameras' sockets (socket
i on path i mod K) and reports per camera too.

Besides the fast viewers it can open ``--slow`` sockets that never read after the
handshake, and ``--phones`` "slow phones" that read at a limited rate (``--phone-rate``
bytes/s, pausing reading between reads, with a small ``SO_RCVBUF``) and report the age
(receive time minus send stamp) of the frames they get. ``--concurrency 0`` opens all
sockets at once (a reconnect storm); every run reports how the join went: connect and
handshake times, the ``client_count`` messages received, and when the viewers settled.
``--tls`` speaks ``wss://`` (and HTTPS for the login) without checking the certificate.

It is built to cost little CPU, since it shares the machine with the daemon: an asyncio
``BufferedProtocol`` per socket (uvloop when installed) reading into one shared buffer,
and a parser that only looks at each message's header and first 55 payload bytes and
skips the rest without copying it.

Protocol on standard output (one line each, for ``run.py``): with ``--wait-go``,
``LOGGED_IN`` and then a wait for ``GO`` on standard input; ``JOIN_START monotonic_s``,
``CONNECTED ok failed seconds``, ``SETTLED seconds``, ``WINDOW_START t0_ns``,
``WINDOW_END t1_ns``, ``DONE``; the results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import secrets
import socket
import sqlite3
import ssl
import statistics
import sys
import time
import urllib.parse
from collections import Counter
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
COUNT_FIELD = re.compile(rb'"type":\s*"client_count".*?"count":\s*(\d+)')
#: Text messages up to this long are read whole (``client_count`` is ~35 bytes).
TEXT_MAX = HEAD - 16
time_ns = time.time_ns
monotonic = time.monotonic
#: A frame older than this (receive time minus stamp) counts as late when judging
#: when the joins settled.
LATE_NS = 100_000_000
#: While true, the phones keep the age of every frame they receive.
RECORDING = False
FAST, SLOW, PHONE = "fast", "slow", "phone"


class Viewer(asyncio.BufferedProtocol):
    """One socket: handshake, then a minimal frame parser that skips payloads."""

    transport: asyncio.Transport

    def __init__(
        self,
        request: bytes,
        role: str,
        opened: asyncio.Future[Viewer],
        rate: float = 0.0,
        camera: int = 0,
    ) -> None:
        self.request = request
        self.role = role
        #: Which of the ``--paths`` (cameras) this socket watches.
        self.camera = camera
        self.slow = role == SLOW
        self.opened = opened
        #: Bytes per second a phone reads (0: as fast as it can).
        self.rate = rate
        self.read_until = 0.0
        self.resume_call: asyncio.TimerHandle | None = None
        self.ages: list[int] = []
        self.started = self.tcp_at = self.open_at = 0.0
        self.first_frame_at = 0.0
        self.last_late_at = 0.0
        self.counts = 0
        self.last_count = -1
        self.last_count_at = 0.0
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
        self.tcp_at = monotonic()
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resume_call is not None:
            self.resume_call.cancel()
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the handshake: {exc}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        return SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.is_open:
            self.feed(0, nbytes)
        else:
            self.handshake_data(nbytes)
        if self.rate:
            self.throttle(nbytes)

    def throttle(self, nbytes: int) -> None:
        """A phone reads ``rate`` bytes/s on average: after each read it stops reading
        until the time those bytes take at that rate has passed."""
        now = monotonic()
        self.read_until = max(self.read_until, now) + nbytes / self.rate
        if self.read_until > now + 0.002 and self.resume_call is None and not self.closed:
            self.transport.pause_reading()
            loop = asyncio.get_running_loop()
            self.resume_call = loop.call_later(self.read_until - now, self.resume)

    def resume(self) -> None:
        self.resume_call = None
        if not self.closed:
            self.transport.resume_reading()

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
        self.open_at = monotonic()
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
                if length <= TEXT_MAX:
                    if have < hl + length:
                        self.pend = bytes(head)
                        return
                    self.text(bytes(head[hl : hl + length]))
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
        if t < 0:
            return  # a binary message without a stamp
        self.last_t = t
        self.last_lat = lat = time_ns() - t
        if lat > LATE_NS:
            self.last_late_at = monotonic()
        elif not self.first_frame_at:
            self.first_frame_at = monotonic()
        if T0 <= t < T1:
            self.frames += 1
            self.lat.append(lat)
        if RECORDING and self.rate:
            self.ages.append(lat)

    def text(self, payload: bytes) -> None:
        found = COUNT_FIELD.search(payload)
        if found:
            self.counts += 1
            self.last_count = int(found.group(1))
            self.last_count_at = monotonic()

    def control(self, op: int, payload: bytes) -> None:
        if op == wl.OP_PING:
            self.pings += 1
            self.transport.write(wl.client_frame(wl.OP_PONG, payload))
        elif op == wl.OP_CLOSE and not self.closed:
            self.closed = True
            self.transport.write(wl.client_frame(wl.OP_CLOSE, payload[:2]))
            self.transport.close()


def client_tls() -> ssl.SSLContext:
    """TLS for the viewers: the bench's self-signed certificate is not checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    tls: ssl.SSLContext | None = None,
) -> Any:
    """A one-shot HTTP/1.0 request; returns (status, [set-cookie values], body)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1" if tls else None
    )
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


async def login(port: int, username: str, password: str, tls: ssl.SSLContext | None = None) -> str:
    """Log in like a browser; returns the ``Cookie`` header value for the session.

    Every cookie the server set is sent back, as a browser would: since the login-CSRF
    fix the form's token is bound to the pre-session cookie ``GET /login`` sets.
    """
    jar: dict[str, str] = {}
    scheme = "https" if tls else "http"

    def keep(cookies: list[str]) -> None:
        for cookie in cookies:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            jar[name.strip()] = value.strip()

    def cookie_header() -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}

    status, cookies, page = await http(port, "GET", "/login", cookie_header(), tls=tls)
    keep(cookies)
    found = CSRF_FIELD.search(page)
    if status != 200 or not found:
        raise RuntimeError(f"GET /login answered {status} without a csrf_token")
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrf_token": found.group(1).decode()}
    ).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": f"{scheme}://127.0.0.1:{port}",
        **cookie_header(),
    }
    status, cookies, _ = await http(port, "POST", "/login", headers, form, tls=tls)
    keep(cookies)
    if status != 302 or "camproxy_session" not in jar:
        raise RuntimeError(f"POST /login for {username} answered {status} without a session")
    return f"camproxy_session={jar['camproxy_session']}"


def mint_sessions(database: str, cookies: list[str], wanted: int) -> list[str]:
    """``wanted`` sessions in all: copies of the logged-in ones under new ids, written
    straight into the daemon's SQLite database (``sessions``: the SHA-256 of the id,
    the user, created and expiry times; the same table before and after the fixes).

    A real crowd reconnecting has one session per browser; logging in ``wanted`` times
    would cost a bcrypt check each (~0.25 s of CPU), so the bench copies sessions."""
    ids = [c.partition("=")[2] for c in cookies]
    with sqlite3.connect(database, timeout=30) as db:
        rows = []
        for session_id in ids:
            key = hashlib.sha256(session_id.encode()).hexdigest()
            row = db.execute(
                "SELECT user_id, created_at, expires_at FROM sessions WHERE id_hash = ?", (key,)
            ).fetchone()
            if row is None:
                raise RuntimeError("a logged-in session is not in the database")
            rows.append(row)
        minted = list(cookies)
        while len(minted) < wanted:
            session_id = secrets.token_urlsafe(32)
            key = hashlib.sha256(session_id.encode()).hexdigest()
            db.execute(
                "INSERT INTO sessions (id_hash, user_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (key, *rows[len(minted) % len(rows)]),
            )
            minted.append(f"camproxy_session={session_id}")
    return minted


def roles(args: argparse.Namespace) -> list[str]:
    """Who each socket is, in the order they connect: the slow ones and the phones are
    spread among the fast ones, not all at the end of the list."""
    found = [FAST] * args.n + [SLOW] * args.slow + [PHONE] * args.phones
    random.Random(1).shuffle(found)
    return found


async def connect_all(
    args: argparse.Namespace, cookies: list[str | None], tls: ssl.SSLContext | None
) -> list[Viewer]:
    loop = asyncio.get_running_loop()
    who = roles(args)
    paths = args.paths.split(",")
    gate = asyncio.Semaphore(args.concurrency or len(who) or 1)
    viewers: list[Viewer] = []
    failures: list[str] = []
    scheme = "https" if tls else "http"
    hostname = "127.0.0.1" if tls else None

    async def one(index: int) -> None:
        cookie = cookies[index % len(cookies)]
        extra = f"Origin: {scheme}://127.0.0.1:{args.port}\r\n"
        if cookie:
            extra += f"Cookie: {cookie}\r\n"
        camera = index % len(paths)
        request = wl.upgrade_request("127.0.0.1", args.port, paths[camera], extra)
        role = who[index]
        rate = args.phone_rate if role == PHONE else 0.0
        rcvbuf = {SLOW: args.slow_rcvbuf, PHONE: args.phone_rcvbuf}.get(role, 0)
        async with gate:
            opened: asyncio.Future[Viewer] = loop.create_future()
            viewer = Viewer(request, role, opened, rate, camera)
            viewer.started = monotonic()
            try:
                if rcvbuf:
                    # A small receive window, like a phone on a bad link: without it the
                    # kernel would swallow tens of MB for a viewer that never reads, and
                    # the daemon would never see it stall within the window.
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    sock.setblocking(False)
                    await loop.sock_connect(sock, ("127.0.0.1", args.port))
                    await loop.create_connection(
                        lambda: viewer, sock=sock, ssl=tls, server_hostname=hostname
                    )
                else:
                    await loop.create_connection(
                        lambda: viewer, "127.0.0.1", args.port, ssl=tls, server_hostname=hostname
                    )
                viewers.append(await asyncio.wait_for(opened, timeout=args.handshake_timeout))
            except (OSError, ConnectionError, TimeoutError) as error:
                failures.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(i) for i in range(len(who))))
    if failures:
        print(f"viewerload: {len(failures)} sockets failed, e.g. {failures[0]}", file=sys.stderr)
    return viewers


async def settle(viewers: list[Viewer], below_ms: float, limit: float) -> float:
    """Wait (at most ``limit`` s) for the joins' backlog to drain.

    Before the count was folded, every join sent ``client_count`` to every viewer, and
    frames queued behind that burst (in the daemon and in the kernel's socket buffers);
    a daemon near its limit took many seconds to catch up. Settled: no text message for
    half a second, and the viewers' latest-frame latency (median over viewers, averaged
    over a second) below ``below_ms``. A daemon that cannot keep up never settles: then
    the wait ends at ``limit`` and the window measures it as it is.
    """
    began = monotonic()
    fast = [v for v in viewers if v.role == FAST] or viewers
    texts = -1
    history: list[float] = []
    while monotonic() - began < limit:
        await asyncio.sleep(0.25)
        count = sum(v.texts for v in viewers)
        if count != texts:
            texts, history = count, []
            continue
        history.append(statistics.median(v.last_lat for v in fast) / 1e6)
        if len(history) >= 4 and statistics.fmean(history[-4:]) < below_ms:
            break
    return monotonic() - began


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


def join_report(viewers: list[Viewer], began: float, connected: float) -> dict[str, Any]:
    """How the join went, judged when the window starts (so nothing later counts).

    A viewer has settled once it got the final ``client_count`` (every socket that
    connected) and its frames are on time: from its last late frame (older than
    ``LATE_NS``) on, or from its first frame if none was late. All times are seconds
    since the first socket started to connect."""
    # The final count a viewer should get: the sockets on its camera.
    per_camera = Counter(v.camera for v in viewers)
    fast = [v for v in viewers if v.role == FAST]
    tcp = [round((v.tcp_at - v.started) * 1e9) for v in viewers if v.tcp_at]
    opened = [round((v.open_at - v.started) * 1e9) for v in viewers if v.open_at]
    counts_at = [v.last_count_at - began for v in viewers if v.last_count_at]
    frames_ok = [max(v.first_frame_at, v.last_late_at) - began for v in fast if v.first_frame_at]
    settled = [
        max(v.first_frame_at, v.last_late_at, v.last_count_at) - began
        for v in fast
        if v.first_frame_at and v.last_count == per_camera[v.camera]
    ]
    return {
        "began_mono": began,
        "connected_mono": connected,
        "connect_all_s": connected - began,
        # Seconds of open sockets before the last one opened: frames the daemon sent
        # during the join are about this times the frame rate.
        "viewer_s_in_join": sum(connected - v.open_at for v in viewers if v.open_at),
        "tcp_ms": percentiles(tcp, (50, 90, 99)),
        "handshake_ms": percentiles(opened, (50, 90, 99)),
        "tcp_over_1s": sum(1 for t in tcp if t > 1e9),
        "handshake_over_1s": sum(1 for t in opened if t > 1e9),
        "count_messages": sum(v.counts for v in viewers),
        "texts": sum(v.texts for v in viewers),
        "final_count_right": sum(1 for v in fast if v.last_count == per_camera[v.camera]),
        "fast": len(fast),
        "counts_final_s": max(counts_at) if counts_at else None,
        "frames_ok_s_median": statistics.median(frames_ok) if frames_ok else None,
        "frames_ok_s_max": max(frames_ok) if frames_ok else None,
        "never_on_time": len(fast) - len(frames_ok),
        "settled_s_median": statistics.median(settled) if settled else None,
        "settled_s_max": max(settled) if len(settled) == len(fast) and settled else None,
        "settled_viewers": len(settled),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global T0, T1, RECORDING
    started = monotonic()
    tls = client_tls() if args.tls else None
    cookies: list[str | None] = [None]
    if args.users:
        pairs = [u.split(":", 1) for u in args.users.split(",")]
        sessions = list(await asyncio.gather(*(login(args.port, u, p, tls) for u, p in pairs)))
        if args.mint_sessions:
            sessions = mint_sessions(args.mint_sessions, sessions, args.n + args.slow + args.phones)
        cookies = list(sessions)
    logged_in = monotonic()
    if args.wait_go:
        print("LOGGED_IN", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            raise RuntimeError(f"expected GO, got {line!r}")
    began = monotonic()
    print(f"JOIN_START {began:.6f}", flush=True)
    viewers = await connect_all(args, cookies, tls)
    connected = monotonic()
    failed = args.n + args.slow + args.phones - len(viewers)
    print(f"CONNECTED {len(viewers)} {failed} {connected - started:.2f}", flush=True)
    settled = await settle(viewers, args.settle_ms, args.settle_max)
    print(f"SETTLED {settled:.3f}", flush=True)
    await asyncio.sleep(args.warmup)
    join = join_report(viewers, began, connected)
    T0 = time_ns()
    RECORDING = True
    window_began = monotonic()
    print(f"WINDOW_START {T0}", flush=True)
    await asyncio.sleep(args.duration)
    T1 = time_ns()
    RECORDING = False
    window = monotonic() - window_began
    print(f"WINDOW_END {T1}", flush=True)
    fast = [v for v in viewers if v.role == FAST]
    slow = [v for v in viewers if v.role == SLOW]
    phones = [v for v in viewers if v.role == PHONE]
    # Frames stamped inside the window may still be on their way: wait until every
    # fast viewer has seen a later one (frames arrive in order) or gave up.
    waited = monotonic()
    await asyncio.sleep(args.grace)
    deadline = waited + args.grace_max
    while monotonic() < deadline and any(v.last_t < T1 and not v.closed for v in fast):
        await asyncio.sleep(0.1)
    grace = monotonic() - waited
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
        "connect_seconds": connected - began,
        "connected": len(viewers),
        "failed": failed,
        "fast_frames": [v.frames for v in fast],
        "fast_cameras": [v.camera for v in fast],
        "latency_ms_by_camera": [
            percentiles([lat for v in fast if v.camera == c for lat in v.lat], (50, 99))
            for c in range(len(args.paths.split(",")))
        ],
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
        "join": join,
        "phones": {
            "count": len(phones),
            "rate": args.phone_rate,
            "rcvbuf": args.phone_rcvbuf,
            # Frames received during the window (by receive time, whatever their stamp).
            "frames": [len(v.ages) for v in phones],
            "fps": [len(v.ages) / window for v in phones],
            "age_ms": percentiles([a for v in phones for a in v.ages], (50, 90, 99)),
            "worst_phone_p50_ms": max(
                (percentiles(list(v.ages), (50,))["p50"] or 0.0 for v in phones), default=None
            ),
            "closed": sum(v.closed for v in phones),
        },
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
    parser.add_argument("--phones", type=int, default=0, help="extra viewers that read slowly")
    parser.add_argument("--phone-rate", type=float, default=300e3, help="bytes/s each phone reads")
    parser.add_argument(
        "--phone-rcvbuf", type=int, default=65536, help="SO_RCVBUF of the phones (0: default)"
    )
    parser.add_argument("--users", default="", help="user:password,... (empty: no login)")
    parser.add_argument(
        "--paths", default="/ws", help="the sockets' paths, spread over them: /cam/a/ws,..."
    )
    parser.add_argument(
        "--mint-sessions",
        default="",
        help="the daemon's database: give every socket a session of its own",
    )
    parser.add_argument("--tls", action="store_true", help="wss:// and https://")
    parser.add_argument("--wait-go", action="store_true", help="wait for GO before joining")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=0.5, help="s to wait after the window")
    parser.add_argument("--grace-max", type=float, default=15.0, help="... for late frames")
    parser.add_argument(
        "--settle-ms", type=float, default=100.0, help="settled: frame latency below this"
    )
    parser.add_argument(
        "--late-ms", type=float, default=100.0, help="a frame older than this is late"
    )
    parser.add_argument("--settle-max", type=float, default=90.0, help="s for joins to drain")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="handshakes at once (0: all at once)"
    )
    parser.add_argument("--handshake-timeout", type=float, default=60.0)
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    global LATE_NS
    LATE_NS = round(args.late_ms * 1e6)
    wl.raise_nofile(args.n + args.slow + args.phones + 256)
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
