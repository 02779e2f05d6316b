"""Newest-frame-only delivery to one consumer that may be slow.

The transport (a WebSocket's TCP connection, an MJPEG response) tells its registered
push producer when it is full and when it has drained. While it is full we keep only
the newest frame and count the ones we skip, so memory per viewer stays bounded and a
slow viewer never delays anyone else. WebSocket and MJPEG viewers share this (the
WebSocket viewer's subclass, ``ViewerFrames``, overrides :meth:`NewestFrameProducer.deliver`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from camproxy.hub.frames import Frame
from camproxy.hub.hub import HubStats


def _nowhere(frame: Frame) -> None:
    raise NotImplementedError("give a deliver callable, or override deliver")


@implementer(IPushProducer)
class NewestFrameProducer:
    """Registered with a transport as its streaming producer; hands frames to ``deliver``.

    Slotted: one of these per viewer is read for every frame, hundreds of times per frame.
    """

    __slots__ = (
        "_deliver",
        "_pending",
        "frames_sent",
        "frames_skipped",
        "paused",
        "stats",
        "stopped",
    )

    def __init__(
        self, deliver: Callable[[Frame], None] = _nowhere, stats: HubStats | None = None
    ) -> None:
        self._deliver = deliver
        #: The hub's counters: every frame written or skipped here is counted there too.
        self.stats = stats or HubStats()
        self.paused = False
        self.stopped = False
        self._pending: Frame | None = None
        self.frames_sent = 0
        self.frames_skipped = 0

    def offer(self, frame: Frame) -> None:
        """Send ``frame`` now, or keep it (dropping an older one) until the transport drains."""
        if self.stopped:
            return
        if self.paused:
            if self._pending is not None:
                self.frames_skipped += 1
                self.stats.frames_skipped += 1
            self._pending = frame
            return
        self.frames_sent += 1
        self.stats.frames_sent += 1
        self.deliver(frame)

    def deliver(self, frame: Frame) -> None:
        """Write ``frame`` to the transport (counted already)."""
        self._deliver(frame)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        pending, self._pending = self._pending, None
        if pending is not None:
            self.offer(pending)

    def stopProducing(self) -> None:
        self.stopped = True
        self._pending = None
