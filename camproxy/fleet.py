"""The cameras of one daemon: a running stack (hub, source, viewers) per camera, built,
changed and removed while the daemon runs (CONTRACT §6).

The fleet knows nothing of where camera settings come from (the database, through the
camera watcher) nor of how a source or a viewer factory is made (the composition root
hands it builders); it only turns a list of :class:`CameraSpec` into running cameras,
and changes as little as it can: a new title or access touches nothing running, a new
frame rate or idle delay adjusts the hub, a new URL or kind replaces only the source
(viewers stay), and only a removed camera closes its viewers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from camproxy.accounts.access import Level
from camproxy.hub.events import CloseReason
from camproxy.hub.hub import CameraHub
from camproxy.hub.source import ICameraSource, ISourceListener
from camproxy.urls import redacted_url

DEFAULT_CAMERA = "default"


@attrs.frozen
class CameraSpec:
    """What one camera is, as configured (CONTRACT §6)."""

    name: str
    url: str
    title: str = ""
    kind: str | None = None
    max_fps: float = 10.0
    idle_close: float = 30.0
    access: Level = Level.CONTROL
    control: str = "shared"


#: Builds a camera's source for its hub, reporting to a listener of the hub's:
#: ``(spec, hub, listener) -> source``.
SourceBuilder = Callable[[CameraSpec, CameraHub, ISourceListener], ICameraSource]
#: Builds a camera's WebSocket viewer factory: ``(stack) -> transport``.
ViewersBuilder = Callable[["CameraStack"], Any]
#: Builds a camera's hub from its spec.
HubBuilder = Callable[[CameraSpec], CameraHub]


class CameraStack:
    """One running camera: its hub, its source and its viewer sockets."""

    def __init__(self, spec: CameraSpec, hub: CameraHub, source: ICameraSource) -> None:
        self.spec = spec
        self.hub = hub
        self.source = source
        self.viewers: Any = None
        self.running = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title or self.spec.name

    @property
    def kind(self) -> str:
        """The configured kind, or once known the detected one."""
        return self.hub.kind or self.spec.kind or "mjpeg"

    @property
    def access(self) -> Level:
        return self.spec.access

    @property
    def control(self) -> str:
        return self.spec.control

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.hub.start(self.source)

    def stop(self, reason: CloseReason) -> Deferred[Any]:
        """Close every viewer with ``reason`` and the camera link; fires once sockets are gone."""
        self.running = False
        closing = self.viewers.close_all(reason) if self.viewers is not None else succeed(None)
        for viewer in self.hub.viewers:
            viewer.close(reason)
        self.hub.stop()
        return closing


class Fleet(Service):
    """Every camera of the daemon, by name."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        build_hub: HubBuilder,
        build_source: SourceBuilder,
        build_viewers: ViewersBuilder,
    ) -> None:
        self._clock = clock
        self._build_hub = build_hub
        self._build_source = build_source
        self._build_viewers = build_viewers
        self._stacks: dict[str, CameraStack] = {}
        #: Called after every change with the names of cameras whose access changed.
        self.on_access_changed: Callable[[set[str]], object] = lambda names: None
        #: Called with the name of each camera removed (once its stack has stopped).
        self.on_removed: Callable[[str], object] = lambda name: None

    # -- looking cameras up -------------------------------------------------------------

    def get(self, name: str) -> CameraStack | None:
        return self._stacks.get(name)

    def __iter__(self) -> Iterator[CameraStack]:
        return iter(sorted(self._stacks.values(), key=lambda stack: stack.name))

    def __len__(self) -> int:
        return len(self._stacks)

    # -- changing the cameras ----------------------------------------------------------

    def _build(self, spec: CameraSpec) -> CameraStack:
        hub = self._build_hub(spec)
        stack = CameraStack(spec, hub, self._build_source(spec, hub, hub))
        stack.viewers = self._build_viewers(stack)
        return stack

    def apply(self, specs: Iterable[CameraSpec]) -> Deferred[Any]:
        """Make the running cameras those of ``specs``, changing no more than needed.

        Fires once the viewers of removed cameras are gone.
        """
        wanted = {spec.name: spec for spec in specs}
        stopping: list[Deferred[Any]] = []
        access_changed: set[str] = set()
        for name in sorted(set(self._stacks) - set(wanted)):
            stack = self._stacks.pop(name)
            self.log.info("camera {name!r} removed: closing its viewers and link", name=name)
            stopping.append(stack.stop(CloseReason.CAMERA_REMOVED))
            self.on_removed(name)
        for name, spec in wanted.items():
            existing = self._stacks.get(name)
            if existing is None:
                stack = self._stacks[name] = self._build(spec)
                self.log.info(
                    "camera {name!r} added ({kind}, {url})",
                    name=name,
                    kind=spec.kind or "kind by URL",
                    url=redacted_url(spec.url),
                )
                if self.running:
                    stack.start()
                continue
            if existing.spec != spec:
                if (existing.spec.access, existing.spec.control) != (spec.access, spec.control):
                    access_changed.add(name)
                self._change(existing, spec)
        if access_changed:
            self.on_access_changed(access_changed)
        return DeferredList(stopping, consumeErrors=True) if stopping else succeed(None)

    def _change(self, stack: CameraStack, spec: CameraSpec) -> None:
        old, stack.spec = stack.spec, spec
        hub = stack.hub
        if (old.url, old.kind) != (spec.url, spec.kind):
            self.log.info(
                "camera {name!r} now at {url} ({kind}): reconnecting",
                name=spec.name,
                url=redacted_url(spec.url),
                kind=spec.kind or "kind by URL",
            )
            hub.replace_source(lambda listener: self._build_source(spec, hub, listener))
            assert hub.source is not None
            stack.source = hub.source
        if (old.max_fps, old.idle_close) != (spec.max_fps, spec.idle_close):
            hub.set_pacing(max_fps=spec.max_fps, idle_close=spec.idle_close)
        if old.control != spec.control:
            hub.control_mode = spec.control

    # -- the service --------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for stack in self._stacks.values():
            stack.start()

    def stopService(self) -> Deferred[Any]:
        """Say goodbye properly: viewers get 1001 (going away), cameras a close."""
        super().stopService()
        closing = [stack.stop(CloseReason.GOING_AWAY) for stack in self._stacks.values()]
        return DeferredList(closing, consumeErrors=True)


#: Seconds between two looks at the cameras' change counter (CONTRACT §6: within 10 s).
WATCH_INTERVAL = 2.0


class CameraWatcher(TimerService):
    """Applies changes to the cameras made elsewhere (the shell, the admin page, another
    daemon): it polls a change counter and, when it moved, reloads every camera."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        fleet: Fleet,
        version: Callable[[], Deferred[int]],
        load: Callable[[], Deferred[list[CameraSpec]]],
        interval: float = WATCH_INTERVAL,
    ) -> None:
        super().__init__(interval, self.check)
        self.clock = clock
        self._fleet = fleet
        self._version = version
        self._load = load
        self._seen: int | None = None

    def saw(self, version: int) -> None:
        """The fleet is as of ``version`` (read at start)."""
        self._seen = version

    async def _check(self) -> None:
        version = await self._version()
        if version == self._seen:
            return
        specs = await self._load()
        await self._fleet.apply(specs)
        self._seen = version

    def check(self) -> Deferred[None]:
        checking = Deferred.fromCoroutine(self._check())
        # A failed check (the database is busy, say) is tried again next time.
        checking.addErrback(lambda failure: self.log.failure("camera check failed", failure))
        return checking
