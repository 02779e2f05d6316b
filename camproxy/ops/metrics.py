"""``/metrics`` in Prometheus text format, from a registry of this daemon's own.

Camera and viewer numbers are read from the hub's counters when scraped, so
nothing is counted per frame per viewer beyond two integer increments.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator

import attrs
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from camproxy.hub.hub import CameraHub

#: (name, help, kind, how to read it from a hub) for each per-camera metric.
_CAMERA_METRICS: tuple[tuple[str, str, str, Callable[[CameraHub], float]], ...] = (
    (
        "camproxy_viewers",
        "Connected viewers (WebSocket and MJPEG)",
        "gauge",
        lambda hub: hub.viewer_count,
    ),
    (
        "camproxy_camera_connected",
        "1 while the camera link is up",
        "gauge",
        lambda hub: hub.connected,
    ),
    (
        "camproxy_frames_received",
        "Valid frames from the camera",
        "counter",
        lambda hub: hub.stats.frames_received,
    ),
    (
        "camproxy_frames_invalid",
        "Invalid binaries from the camera, dropped",
        "counter",
        lambda hub: hub.stats.frames_invalid,
    ),
    (
        "camproxy_frames_sent",
        "Frames written to viewers",
        "counter",
        lambda hub: hub.stats.frames_sent,
    ),
    (
        "camproxy_frames_skipped",
        "Frames skipped for slow viewers",
        "counter",
        lambda hub: hub.stats.frames_skipped,
    ),
    (
        "camproxy_frame_requests",
        "Frame requests sent to the camera",
        "counter",
        lambda hub: hub.stats.frame_requests,
    ),
    (
        "camproxy_camera_timeouts",
        "Frame requests given up",
        "counter",
        lambda hub: hub.stats.frame_request_timeouts,
    ),
    (
        "camproxy_camera_connects",
        "Camera links established",
        "counter",
        lambda hub: hub.stats.camera_connects,
    ),
    (
        "camproxy_camera_disconnects",
        "Camera links lost or closed",
        "counter",
        lambda hub: hub.stats.camera_disconnects,
    ),
)


class CameraCollector(Collector):
    """Reads every camera's hub at scrape time, one sample per camera (``camera="NAME"``)."""

    def __init__(self, cameras: Callable[[], Iterable[tuple[str, CameraHub]]]) -> None:
        self._cameras = cameras

    def collect(self) -> Iterator[Metric]:
        cameras = list(self._cameras())
        for name, doc, kind, read in _CAMERA_METRICS:
            family_type = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
            family = family_type(name, doc, labels=["camera"])
            for camera, hub in cameras:
                family.add_metric([camera], float(read(hub)))
            yield family


@attrs.frozen
class ClusterReading:
    """This daemon's side of a cluster when scraped (CONTRACT §8)."""

    bus_connected: bool
    other_daemons: int
    publish_failures: int
    #: Per camera: (held here, frames published, frames followed, frames fenced off).
    cameras: dict[str, tuple[bool, int, int, int]]


class ClusterCollector(Collector):
    """The cluster's numbers, read at scrape time from ``read()``."""

    def __init__(self, read: Callable[[], ClusterReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        yield GaugeMetricFamily(
            "camproxy_cluster_bus_connected",
            "Whether this daemon reaches the cluster's Redis",
            value=float(reading.bus_connected),
        )
        yield GaugeMetricFamily(
            "camproxy_cluster_other_daemons",
            "Other daemons heard from recently",
            value=reading.other_daemons,
        )
        yield CounterMetricFamily(
            "camproxy_cluster_publish_failures",
            "Publications to Redis that failed (frames, events, heartbeats)",
            value=reading.publish_failures,
        )
        families: tuple[GaugeMetricFamily | CounterMetricFamily, ...] = (
            GaugeMetricFamily(
                "camproxy_cluster_holding",
                "Whether this daemon holds the camera's link",
                labels=["camera"],
            ),
            CounterMetricFamily(
                "camproxy_cluster_frames_published",
                "Frames published as the holder",
                labels=["camera"],
            ),
            CounterMetricFamily(
                "camproxy_cluster_frames_followed",
                "Frames taken from the holder",
                labels=["camera"],
            ),
            CounterMetricFamily(
                "camproxy_cluster_frames_fenced",
                "Late frames of a deposed holder, dropped",
                labels=["camera"],
            ),
        )
        for camera, values in sorted(reading.cameras.items()):
            for family, value in zip(families, values, strict=True):
                family.add_metric([camera], float(value))
        yield from families


class FrozenObjectsCollector(Collector):
    """How many objects the garbage collector no longer scans (frozen after start-up)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "python_gc_frozen_objects",
            "Objects exempt from garbage collection scans (gc.freeze after start-up)",
            value=gc.get_freeze_count(),
        )


class DaemonMetrics:
    """The registry and the few metrics counted as things happen."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The usual process_* (CPU, memory, open files) and python_* families.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(FrozenObjectsCollector())
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

    def watch_cameras(self, cameras: Callable[[], Iterable[tuple[str, CameraHub]]]) -> None:
        """Report the cameras ``cameras()`` names, as they are when scraped."""
        self.registry.register(CameraCollector(cameras))

    def watch_cluster(self, read: Callable[[], ClusterReading]) -> None:
        """Report this daemon's side of a cluster, as it is when scraped."""
        self.registry.register(ClusterCollector(read))
