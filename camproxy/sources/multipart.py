"""A push parser for the ``multipart/x-mixed-replace`` streams of MJPEG cameras.

Fed the response body as it arrives (:meth:`MJPEGParser.feed`), it hands each complete
part (the JPEG bytes) to a callback. It follows the boundary of the response's
``Content-Type``, takes a part's ``Content-Length`` when there is one (and then delivers
the part as soon as its last byte arrives, without waiting for the next boundary) and
otherwise ends the part at the next boundary; other part headers are ignored.

Why not a library: ``multipart`` 2.0 (``PushMultipartParser``) and ``python-multipart``
0.0.34 (``MultipartParser`` with callbacks) were fed the byte streams that Espressif's
``CameraWebServer`` and ``esp32-cam-webserver`` write. Both parse those well-formed
streams, but neither fits a camera link:

- both end a part only at the next boundary, and ``CameraWebServer`` writes the boundary
  *before* each part, so every frame would wait for the next one (a frame of latency);
- ``multipart`` is for ``multipart/form-data`` only: a part without
  ``Content-Disposition: form-data`` is an error unless a private method is overridden;
- ``python-multipart`` has no per-part limit: its ``max_size`` caps the whole body, so an
  endless stream is cut off silently after that many bytes;
- in both, a part or header over a limit, a ``--`` too many before the boundary or bare
  ``LF`` line ends raise and leave the parser dead: the link would have to reconnect
  instead of skipping one bad part.

This parser is small, reads linearly (every search resumes where the last one stopped),
never holds more than one part's cap plus one read, and costs about 14 us of CPU per
30 KB frame in 1460-byte reads (``bench/multipart_bench.py``).

**Tolerance.** The boundary may be declared with or without quotes and with its own
leading ``--``; a delimiter line is any line that holds the boundary after up to
:data:`MAX_DASHES` dashes (``--B``, ``B``, ``----B``), optionally followed by ``--`` or
spaces, ended by ``CRLF`` or ``LF``. Anything before the first delimiter (the ``CRLF``
the ESP32 firmwares send first) is skipped. A part whose headers end without a blank
line but go straight into ``FF D8`` starts its body there. A ``Content-Length`` that
turns out to cover a boundary (the server lied) is ignored for that part.

**Limits.** A part over ``max_part_size`` or headers over ``max_header_size`` are
*skipped*: the parser drops what it holds, reports the discard, and resynchronizes at the
next boundary. It does not fail the link, because one oversized frame (a camera switched
to its largest resolution, say) is no reason to restart a stream that the firmware may
be slow to serve again (esp32-cam-webserver blinks its LED and switches its lamp on every
new stream); a stream that never recovers sends no valid frame, and the source's stall
watchdog drops it then.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum, auto

DEFAULT_MAX_PART_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_HEADER_SIZE = 16 * 1024

#: Dashes accepted before the boundary on a delimiter line (the standard has two).
MAX_DASHES = 8
#: Bytes accepted after the boundary on its line (``--``, spaces, the line end).
MAX_DELIMITER_TAIL = 64
#: Longest boundary learned from the body when the ``Content-Type`` names none.
MAX_LEARNED_BOUNDARY = 70

_JPEG_START = b"\xff\xd8"
_LF = 0x0A
_DASH = 0x2D
_CR = 0x0D

_BOUNDARY_PARAM = re.compile(
    rb"""(?:^|;)\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))""", re.IGNORECASE
)


def boundary_from_content_type(content_type: bytes | str | None) -> bytes | None:
    """The boundary of a ``multipart/*`` ``Content-Type``, without its leading dashes.

    ``None`` if the type is not multipart; ``b""`` if it is but names no boundary (the
    parser then learns it from the body).
    """
    if content_type is None:
        return None
    value = content_type.encode("latin-1") if isinstance(content_type, str) else content_type
    media, _, params = value.partition(b";")
    if not media.strip().lower().startswith(b"multipart/"):
        return None
    match = _BOUNDARY_PARAM.search(b";" + params)
    if match is None:
        return b""
    quoted, bare = match.groups()
    raw = re.sub(rb"\\(.)", rb"\1", quoted) if quoted is not None else bare
    return raw.strip().lstrip(b"-")


class _State(Enum):
    SEEK = auto()  # looking for a delimiter line (preamble, or after a bad part)
    HEADERS = auto()  # reading a part's header lines
    BODY_LENGTH = auto()  # reading a part of known Content-Length
    BODY_SCAN = auto()  # reading a part up to the next delimiter


_NOT_A_DELIMITER = (-1, -1, False)


class MJPEGParser:
    """Splits a ``multipart/x-mixed-replace`` body into its parts, as the bytes come.

    :param boundary: from :func:`boundary_from_content_type`; leading dashes are ignored,
        and an empty one is learned from the first line of the body that starts ``--``.
    :param on_part: called with each complete part's body.
    :param on_discard: called with a one-line reason when a part is skipped (over a
        limit); the parser goes on at the next boundary.
    """

    def __init__(
        self,
        boundary: bytes,
        on_part: Callable[[bytes], object],
        *,
        max_part_size: int = DEFAULT_MAX_PART_SIZE,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        on_discard: Callable[[str], object] | None = None,
    ) -> None:
        self._core = boundary.lstrip(b"-")
        self._on_part = on_part
        self._on_discard = on_discard
        self.max_part_size = max_part_size
        self.max_header_size = max_header_size
        self._buf = bytearray()
        self._state = _State.SEEK
        # Whether buffer offset 0 is the start of a line (the body's first byte is).
        self._line_start = True
        self._scan = 0  # where the next search in the buffer resumes
        self._length = 0  # bytes still to come of a BODY_LENGTH part
        self._chunks: list[bytes] = []
        self._chunked = 0  # bytes in _chunks
        self._closed = False
        self._steps: dict[_State, Callable[[], bool]] = {
            _State.SEEK: self._seek,
            _State.HEADERS: self._headers,
            _State.BODY_LENGTH: self._body_length,
            _State.BODY_SCAN: self._body_scan,
        }
        #: Complete parts delivered.
        self.parts = 0
        #: Parts skipped for a limit.
        self.discarded = 0
        #: Bytes dropped while looking for a boundary (preamble and garbage).
        self.skipped_bytes = 0

    @property
    def boundary(self) -> bytes:
        """The boundary in use, without dashes (learned from the body if none was given)."""
        return self._core

    @property
    def buffered(self) -> int:
        """Bytes held right now, a part in progress included."""
        return len(self._buf) + self._chunked

    def close(self) -> None:
        """Drop everything held and ignore whatever is fed from now on."""
        self._closed = True
        self._buf = bytearray()
        self._chunks = []
        self._chunked = 0

    def feed(self, data: bytes) -> None:
        """Parse the next bytes of the body; calls ``on_part`` for every part completed."""
        if self._closed or not data:
            return
        if self._state is _State.BODY_LENGTH and not self._buf and len(data) < self._length:
            # The common case while a large frame arrives: keep the read, copy nothing.
            self._chunks.append(data)
            self._chunked += len(data)
            self._length -= len(data)
            return
        self._buf += data
        steps = self._steps
        while not self._closed and steps[self._state]():
            pass

    # -- states: each returns True when it moved on, False when it needs more bytes --

    def _seek(self) -> bool:
        if not self._core and not self._learn_boundary():
            return False
        buf, core = self._buf, self._core
        pos = self._scan
        while True:
            found = buf.find(core, pos)
            if found < 0:
                # Keep only what may be the start of a delimiter line.
                self._drop(len(buf) - (len(core) + MAX_DASHES + 1))
                self._scan = max(0, len(buf) - len(core) + 1)
                return False
            line = self._delimiter(found)
            if line is None:  # its line end has not come yet
                self._scan = found - self._drop(found - MAX_DASHES - 1)
                return False
            start, end, closing = line
            if start < 0:
                pos = found + 1
                continue
            self.skipped_bytes += start
            del buf[:end]
            self._line_start = True
            self._scan = 0
            if not closing:
                self._state = _State.HEADERS
            return True

    def _headers(self) -> bool:
        buf = self._buf
        pos = self._scan
        while True:
            if buf[pos : pos + 2] == _JPEG_START:
                body = pos  # no blank line before the JPEG: its body starts here
                break
            newline = buf.find(b"\n", pos)
            if newline < 0:
                if len(buf) > self.max_header_size:
                    self._discard(f"part headers over {self.max_header_size} bytes")
                    return True
                self._scan = pos
                return False
            line = buf[pos:newline].strip()
            pos = newline + 1
            if pos > self.max_header_size:
                self._discard(f"part headers over {self.max_header_size} bytes")
                return True
            if not line:
                body = pos
                break
        length = _content_length(bytes(buf[:body]))
        del buf[:body]
        self._scan = 0
        self._line_start = True
        if length is None:
            self._state = _State.BODY_SCAN
        elif length > self.max_part_size:
            self._discard(f"a part over the {self.max_part_size} bytes limit")
        else:
            self._state = _State.BODY_LENGTH
            self._length = length
        return True

    def _body_length(self) -> bool:
        buf = self._buf
        take = min(self._length, len(buf))
        if take:
            self._chunks.append(bytes(buf[:take]))
            self._chunked += take
            del buf[:take]
            self._length -= take
        if self._length:
            return False
        part = b"".join(self._chunks)
        self._chunks = []
        self._chunked = 0
        if self._core in part:
            # The length covers a boundary: the server lied. Find this part's real end.
            buf[0:0] = part
            self._state = _State.BODY_SCAN
            self._scan = 0
            return True
        # What follows should be the delimiter line, after a CRLF or (tolerated) at once.
        self._state = _State.SEEK
        self._line_start = True
        self._deliver(part)
        return True

    def _body_scan(self) -> bool:
        buf, core = self._buf, self._core
        pos = self._scan
        while True:
            found = buf.find(core, pos)
            if found < 0:
                if len(buf) > self.max_part_size + len(core) + MAX_DASHES + 2:
                    self._discard(f"a part over the {self.max_part_size} bytes limit")
                    return True
                self._scan = max(pos, len(buf) - len(core) + 1)
                return False
            line = self._delimiter(found)
            if line is None:
                self._scan = found
                return False
            start, end, closing = line
            if start < 0:
                pos = found + 1
                continue
            body_end = start
            if body_end and buf[body_end - 1] == _LF:
                body_end -= 1
                if body_end and buf[body_end - 1] == _CR:
                    body_end -= 1
            part = bytes(buf[:body_end])
            del buf[:end]
            self._scan = 0
            self._line_start = True
            self._state = _State.SEEK if closing else _State.HEADERS
            if len(part) > self.max_part_size:
                self.discarded += 1
                self._report(f"a part over the {self.max_part_size} bytes limit")
            else:
                self._deliver(part)
            return True

    # -- helpers ------------------------------------------------------------------

    def _at_line_start(self, offset: int) -> bool:
        return self._line_start if offset == 0 else self._buf[offset - 1] == _LF

    def _delimiter(self, found: int) -> tuple[int, int, bool] | None:
        """Is the boundary at ``found`` on a delimiter line?

        ``None`` if that cannot be told before more bytes come; ``(-1, -1, False)`` if it
        is not; else ``(line start, offset after the line end, closing delimiter)``.
        """
        buf = self._buf
        start = found
        while start > 0 and buf[start - 1] == _DASH and found - start <= MAX_DASHES:
            start -= 1
        if found - start > MAX_DASHES or not self._at_line_start(start):
            return _NOT_A_DELIMITER
        after = found + len(self._core)
        newline = buf.find(b"\n", after, after + MAX_DELIMITER_TAIL)
        if newline < 0:
            return None if len(buf) < after + MAX_DELIMITER_TAIL else _NOT_A_DELIMITER
        tail = buf[after:newline].strip()
        if tail not in (b"", b"--"):
            return _NOT_A_DELIMITER
        return (start, newline + 1, tail == b"--")

    def _learn_boundary(self) -> bool:
        """Take the boundary from the first line that starts ``--`` (none was declared)."""
        buf = self._buf
        longest = MAX_LEARNED_BOUNDARY + MAX_DASHES + 2
        pos = 0
        while True:
            found = buf.find(b"--", pos)
            if found < 0:
                self._drop(len(buf) - 1)
                return False
            if not self._at_line_start(found):
                pos = found + 1
                continue
            newline = buf.find(b"\n", found, found + longest)
            if newline < 0:
                if len(buf) < found + longest:
                    self._drop(found - 1)
                    return False
                pos = found + 1
                continue
            candidate = bytes(buf[found:newline]).strip().lstrip(b"-")
            if candidate and all(0x21 <= byte <= 0x7E for byte in candidate):
                self._core = candidate
                self._scan = 0
                return True
            pos = newline

    def _drop(self, count: int) -> int:
        """Forget the first ``count`` bytes of the buffer (skipped, not a part)."""
        if count <= 0:
            return 0
        self._line_start = self._buf[count - 1] == _LF
        self.skipped_bytes += count
        del self._buf[:count]
        return count

    def _discard(self, why: str) -> None:
        """Skip the part in progress: drop what is held and look for the next boundary."""
        self.discarded += 1
        self._chunks = []
        self._chunked = 0
        self._state = _State.SEEK
        self._scan = 0
        self._line_start = False
        self._report(why)

    def _report(self, why: str) -> None:
        if self._on_discard is not None:
            self._on_discard(why)

    def _deliver(self, part: bytes) -> None:
        self.parts += 1
        self._on_part(part)


def _content_length(headers: bytes) -> int | None:
    """The last well-formed ``Content-Length`` among a part's header lines, if any."""
    length = None
    for line in headers.split(b"\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            number = value.strip()
            length = int(number) if number.isdigit() and len(number) < 19 else None
    return length
