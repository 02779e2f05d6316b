"""Shared pieces of the load benchmark: WebSocket framing, stamped JPEGs, /proc readings.

Everything here is deliberately minimal: the emulator, the bare relay and the viewer
client speak just enough RFC 6455 for one server and one kind of client, so that their
own cost stays small next to the daemon they measure.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import resource
import socket
import struct

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
COM = b"\xff\xfe"

#: The send-time stamp, a JPEG comment right after SOI: fixed width so a reader finds
#: the digits at fixed offsets without searching. ``t`` is ``time.time_ns()`` at send,
#: ``s`` the camera's frame sequence number.
STAMP_PREFIX = b"camproxy-bench t="
STAMP_TEXT_LEN = len(STAMP_PREFIX) + 19 + len(b" s=") + 10
#: Bytes of a stamped JPEG up to the end of the stamp text.
STAMP_SEGMENT_LEN = 4 + STAMP_TEXT_LEN
#: Offsets into a stamped JPEG (the WebSocket payload).
STAMP_PREFIX_AT = 6
STAMP_T_AT = STAMP_PREFIX_AT + len(STAMP_PREFIX)
STAMP_S_AT = STAMP_T_AT + 19 + 3
STAMP_HEAD = STAMP_S_AT + 10


def stamp_segment(t_ns: int, seq: int) -> bytes:
    text = b"%s%019d s=%010d" % (STAMP_PREFIX, t_ns, seq)
    return COM + struct.pack(">H", len(text) + 2) + text


def stamped(jpeg: bytes, t_ns: int, seq: int) -> bytes:
    """``jpeg`` with a stamp comment inserted right after its SOI (still a valid JPEG)."""
    return SOI + stamp_segment(t_ns, seq) + jpeg[2:]


def read_stamp(payload: bytes) -> tuple[int, int] | None:
    """``(t_ns, seq)`` of a stamped JPEG, or None."""
    if payload[STAMP_PREFIX_AT:STAMP_T_AT] != STAMP_PREFIX:
        return None
    return int(payload[STAMP_T_AT : STAMP_T_AT + 19]), int(payload[STAMP_S_AT:STAMP_HEAD])


def make_jpegs(count: int, size: int, width: int = 640, height: int = 480) -> list[bytes]:
    """``count`` distinct real JPEGs (VGA), each padded with COM segments so that, once
    stamped, it is exactly ``size`` bytes. Quality is lowered until the picture fits."""
    from PIL import Image, ImageDraw  # only the emulator needs Pillow

    target = size - STAMP_SEGMENT_LEN
    rng = random.Random(1234)
    jpegs = []
    for index in range(count):
        image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(60):
            x, y = rng.randrange(width), rng.randrange(height)
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            draw.rectangle((x, y, x + rng.randrange(8, 120), y + rng.randrange(8, 90)), colour)
        draw.text((20, 20), f"camproxy bench frame {index}", fill=(255, 255, 255))
        data = b""
        for quality in (85, 75, 60, 45, 30, 20, 10, 5):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            data = buffer.getvalue()
            if len(data) <= target - 4:
                break
        if len(data) > target - 4:
            raise ValueError(f"cannot fit a {width}x{height} JPEG into {size} bytes")
        jpegs.append(pad_jpeg(data, target))
    return jpegs


def pad_jpeg(jpeg: bytes, size: int) -> bytes:
    """Insert COM segments of filler after SOI until the JPEG is exactly ``size`` bytes."""
    missing = size - len(jpeg)
    segments = []
    while missing > 0:
        # A segment is 4 bytes of marker and length plus up to 65533 of text; never
        # leave a remainder too short for a segment of its own.
        body = min(missing - 4, 65533)
        if 0 < missing - (body + 4) < 4:
            body -= 4
        body = max(body, 0)
        segments.append(COM + struct.pack(">H", body + 2) + b"." * body)
        missing -= body + 4
    padded = SOI + b"".join(segments) + jpeg[2:]
    assert len(padded) == size and padded.endswith(EOI)
    return padded


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """A server-to-client (unmasked) WebSocket frame header."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack(">BBH", first, 126, length)
    return struct.pack(">BBQ", first, 127, length)


def unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A client-to-server (masked) WebSocket frame; only small control/text payloads."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + unmask(payload, mask)


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())


def new_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def parse_http_head(head: bytes) -> tuple[str, dict[str, str]]:
    """The first line and the (lower-cased) headers of an HTTP request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def switching_protocols(key: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )


def upgrade_request(host: str, port: int, path: str = "/ws", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {new_key().decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode("latin-1")


def raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to at least ``wanted`` if allowed; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else max(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        if hard != resource.RLIM_INFINITY and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    return sum(cpu_times(pid))


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in KiB, from /proc/PID/status."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


def cpu_model() -> str:
    """The processor's model name, from /proc/cpuinfo, for the reports."""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def parse_ns(text: str) -> list[int]:
    """``--viewers 200,500``: the Ns to run."""
    return [int(v) for v in text.split(",") if v.strip()]
