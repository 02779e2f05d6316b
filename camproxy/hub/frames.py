"""A frame from the camera, shared by every viewer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

T = TypeVar("T")


@attrs.define(eq=False)
class Frame:
    """One JPEG from the camera, shared by every viewer.

    Each transport encodes a frame at most once (a prepared WebSocket message, an
    MJPEG part) through :meth:`encoded`, however many viewers receive it.
    """

    data: bytes
    sequence: int
    received_at: float
    _encodings: dict[str, Any] = attrs.field(factory=dict, repr=False)

    def encoded(self, key: str, encode: Callable[[bytes], T]) -> T:
        try:
            return self._encodings[key]
        except KeyError:
            value = self._encodings[key] = encode(self.data)
            return value
