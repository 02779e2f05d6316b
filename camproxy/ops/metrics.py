"""``/metrics`` in Prometheus text format, from a registry of this daemon's own.

Camera and viewer numbers are read from the hub's counters when scraped, so
nothing is counted per frame per viewer beyond two integer increments.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from camproxy.hub.hub import CameraHub


class CameraCollector(Collector):
    """Reads one camera's hub at scrape time."""

    def __init__(self, hub: CameraHub, camera: str = "default") -> None:
        self._hub = hub
        self._camera = camera

    def collect(self) -> Iterator[Metric]:
        hub, stats, labels = self._hub, self._hub.stats, [self._camera]

        def gauge(name: str, doc: str, value: float) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=["camera"])
            family.add_metric(labels, value)
            return family

        def counter(name: str, doc: str, value: float) -> Metric:
            family = CounterMetricFamily(name, doc, labels=["camera"])
            family.add_metric(labels, value)
            return family

        yield gauge("camproxy_viewers", "Connected viewers (WebSocket and MJPEG)", hub.viewer_count)
        yield gauge("camproxy_camera_connected", "1 while the camera link is up", hub.connected)
        yield counter(
            "camproxy_frames_received", "Valid frames from the camera", stats.frames_received
        )
        yield counter(
            "camproxy_frames_invalid",
            "Invalid binaries from the camera, dropped",
            stats.frames_invalid,
        )
        yield counter("camproxy_frames_sent", "Frames written to viewers", stats.frames_sent)
        yield counter(
            "camproxy_frames_skipped", "Frames skipped for slow viewers", stats.frames_skipped
        )
        yield counter("camproxy_frame_requests", "getframe requests sent", stats.frame_requests)
        yield counter(
            "camproxy_camera_timeouts", "getframe requests given up", stats.frame_request_timeouts
        )
        yield counter("camproxy_camera_connects", "Camera links established", stats.camera_connects)
        yield counter(
            "camproxy_camera_disconnects", "Camera links lost or closed", stats.camera_disconnects
        )


class DaemonMetrics:
    """The registry and the few metrics counted as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "camproxy_http_requests",
            "HTTP requests by method and status",
            ["method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "camproxy_http_request_seconds",
            "HTTP request duration",
            ["method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0),
        )
        self.login_failures = Counter(
            "camproxy_login_failures", "Failed or throttled logins", registry=self.registry
        )

    def watch_camera(self, hub: CameraHub, camera: str = "default") -> None:
        self.registry.register(CameraCollector(hub, camera))
