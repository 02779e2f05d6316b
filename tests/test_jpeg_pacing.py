"""A JPEG camera and the hub on a fake clock: the request after a (re)connect waits a frame
interval after the answer that connected it (CONTRACT §7: one request at a time, the next
no sooner than 1/``max_fps`` after the previous answer)."""

from __future__ import annotations

from twisted.internet.task import Clock

from camproxy.hub.hub import CameraHub
from camproxy.sources.http import HttpSourceSettings
from camproxy.sources.httpcam import JPEGSource
from tests.fakes import FakeViewer
from tests.httpcams import FakeNetwork, image_answer, jpeg

MAX_FPS = 10.0
IDLE_CLOSE = 30.0


def test_the_answer_that_connects_also_paces_the_next_request() -> None:
    clock = Clock()
    network = FakeNetwork(clock)
    hub = CameraHub(clock, max_fps=MAX_FPS, idle_close=IDLE_CLOSE, request_timeout=2.0)
    settings = HttpSourceSettings("http://cam/still.jpg", max_fps=MAX_FPS, endpoint_factory=network)
    hub.start(JPEGSource(clock, hub, settings))
    for visit in range(2):  # at start, then after an idle close
        viewer = FakeViewer()
        hub.attach(viewer)  # watching before the camera's first answer
        assert len(network.live()) == 1
        network.last.send(image_answer(jpeg(3000, 2 * visit)))
        assert hub.connected and len(viewer.frames) == 1
        clock.advance(0)
        assert network.live() == [], "asked again at once"
        clock.advance(1 / MAX_FPS - 0.001)
        assert network.live() == []
        clock.advance(0.001)
        assert len(network.live()) == 1
        network.last.send(image_answer(jpeg(3000, 2 * visit + 1)))
        assert len(viewer.frames) == 2
        hub.detach(viewer)
        clock.advance(IDLE_CLOSE)
        assert not hub.link_open and network.live() == []
    hub.stop()
    assert clock.getDelayedCalls() == []
