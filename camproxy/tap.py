"""``twistd camproxy``: the options and the one function that builds the daemon."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import attrs
from autobahn.twisted.resource import WebSocketResource
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.python import usage

from camproxy.accounts.passwords import IPasswordHasher
from camproxy.accounts.service import AccountsService, StartupError
from camproxy.config import Config, ConfigError, build_config, read_environment
from camproxy.hub.hub import CameraHub
from camproxy.ops.logs import make_observer, twistd_primary_stream
from camproxy.ops.metrics import DaemonMetrics
from camproxy.sources.robocam.link import CameraLink, CameraSettings
from camproxy.viewers.delivery import FrameTotals
from camproxy.viewers.websocket import CLOSE_GOING_AWAY, ViewerFactory
from camproxy.web.api import IntegrationApi
from camproxy.web.assets import asset_directory
from camproxy.web.auth import Authenticator
from camproxy.web.csrf import CsrfTokens
from camproxy.web.gate import SessionGate, SessionWatcher
from camproxy.web.login_throttle import LoginThrottle
from camproxy.web.origins import OriginPolicy
from camproxy.web.pages import CamProxyWeb, SiteRoot, WebDependencies, templates_environment
from camproxy.web.proxies import TrustedProxies, parse_networks
from camproxy.web.requestlog import CamProxySite


class Options(usage.Options):
    """Command-line options of ``twistd camproxy`` (CONTRACT §4)."""

    synopsis = "[options]"
    longdesc = (
        "Keeps one WebSocket link to a RoboCam/ESP32-CAM camera and serves live video and "
        "controls to many logged-in browsers. Every option can also be set by the "
        "environment variable named in the README, or in a .env file."
    )
    optFlags = [["demo", None, "Run a built-in emulated camera in-process and use it."]]
    optParameters: list[list[Any]] = [
        ["listen", None, None, "Twisted server endpoint to serve HTTP and /ws on."],
        ["camera", None, None, "Camera WebSocket URL, e.g. ws://192.168.1.100:80/ws."],
        ["database", None, None, "SQLite database file."],
        ["max-fps", None, None, "Never ask the camera for more frames per second."],
        ["idle-close", None, None, "Close the camera link after this many idle seconds."],
        ["frame-timeout", None, None, "Give up a getframe unanswered this long (seconds)."],
        ["camera-ca", None, None, "PEM file of the CA that signed a wss:// camera's cert."],
        ["log-format", None, None, "text (default) or json (one JSON object a line)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-origin"] = []
        self["trusted-proxy"] = []
        self["metrics-allow"] = []
        self.config: Config | None = None

    def opt_allowed_origin(self, origin: str) -> None:
        """Also accept viewer sockets from this origin (repeatable)."""
        self["allowed-origin"].append(origin)

    def opt_trusted_proxy(self, address: str) -> None:
        """Believe X-Forwarded-For/-Proto from this address or network (repeatable)."""
        self["trusted-proxy"].append(address)

    def opt_metrics_allow(self, address: str) -> None:
        """Serve /metrics without login to this address or network (repeatable)."""
        self["metrics-allow"].append(address)

    def parseOptions(self, options: Any = None) -> None:
        # One line and exit status 1 for any bad option, never a traceback or a
        # screenful of usage text.
        try:
            super().parseOptions(options)
        except usage.UsageError as problem:
            raise SystemExit(f"camproxy: error: {problem}") from None

    def postOptions(self) -> None:
        try:
            self.config = config = build_config(self, read_environment())
        except ConfigError as problem:
            raise usage.UsageError(str(problem)) from None
        # twistd starts logging after parsing options; give it our observer unless
        # the command line chose another (--logger, --syslog).
        twistd = self.parent
        if twistd is not None and not twistd.get("logger") and not twistd.get("syslog"):
            # twistd resolves --logger by name in its own postOptions, which runs after
            # ours; hand it our observer factory once it has done so.
            resolve_names = twistd.postOptions

            def use_our_observer() -> None:
                resolve_names()
                nodaemon, logfile = bool(twistd.get("nodaemon")), twistd.get("logfile")
                twistd["logger"] = lambda: make_observer(
                    level=config.log_level,
                    fmt=config.log_format,
                    primary=twistd_primary_stream(nodaemon, logfile),
                    log_file=config.log_file,
                )

            twistd.postOptions = use_our_observer  # type: ignore[method-assign]


class CameraService(Service):
    """One camera: its hub, its link and its viewers, started and stopped together."""

    def __init__(
        self, hub: CameraHub, link: CameraLink, viewers: ViewerFactory, totals: FrameTotals
    ) -> None:
        self.hub = hub
        self.link = link
        self.viewers = viewers
        self.totals = totals

    def startService(self) -> None:
        super().startService()
        self.hub.start(self.link)

    def stopService(self) -> Deferred[Any]:
        """Say goodbye properly: viewers get 1001 (going away), the camera a close frame."""
        super().stopService()
        closing = self.viewers.close_all(CLOSE_GOING_AWAY, "server shutting down")
        self.hub.stop()
        return closing


class DemoCameraService(Service):
    """The built-in emulated camera, on a private UNIX socket only this daemon knows."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.directory = tempfile.mkdtemp(prefix="camproxy-demo-")
        self.socket_path = f"{self.directory}/camera.sock"
        self._port: Any = None
        self.camera: Any = None

    def startService(self) -> None:
        from camproxy.democam.robocam import listen_demo_camera

        super().startService()

        def listening(result: tuple[Any, Any]) -> None:
            self._port, self.camera = result

        listen_demo_camera(self._reactor, f"unix:{self.socket_path}").addCallback(listening)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        stopped: Deferred[None] | None = None
        if self.camera is not None:
            self.camera.drop_all()
        if self._port is not None:
            stopped = self._port.stopListening()
        shutil.rmtree(self.directory, ignore_errors=True)
        return stopped


def endpoint_or_exit(reactor: Any, description: str) -> Any:
    try:
        return serverFromString(reactor, description)
    except Exception as problem:
        raise SystemExit(
            f"camproxy: error: invalid --listen endpoint {description!r}: {problem}"
        ) from None


def build_service(
    config: Config, reactor: Any, hasher: IPasswordHasher | None = None
) -> MultiService:
    """Build the whole daemon from one :class:`Config`; nothing is global.

    ``hasher`` replaces bcrypt (tests use a fast one).
    """
    try:
        # Opened, upgraded and bootstrapped now, before any port is bound.
        accounts = AccountsService.open(reactor, config, hasher)
    except StartupError as problem:
        raise SystemExit(f"camproxy: error: {problem}") from None
    top = MultiService()
    top.setName("camproxy")

    accounts.setName("accounts")
    accounts.setServiceParent(top)

    hub = CameraHub(
        reactor,
        max_fps=config.max_fps,
        idle_close=config.idle_close,
        request_timeout=config.frame_timeout,
    )
    settings = CameraSettings(
        url=config.camera_url,
        max_frame_bytes=config.max_frame_bytes,
        connect_timeout=config.camera_connect_timeout,
        ping_interval=config.camera_ping_interval,
        ping_timeout=config.camera_ping_interval,
        ca_file=config.camera_ca,
    )
    if config.demo:
        demo = DemoCameraService(reactor)
        demo.setName("democam")
        demo.setServiceParent(top)
        settings = attrs.evolve(settings, url="ws://democam/ws", ca_file=None)
        link = CameraLink(
            reactor, hub, settings, endpoint=UNIXClientEndpoint(reactor, demo.socket_path)
        )
    else:
        link = CameraLink(reactor, hub, settings)

    origins = OriginPolicy(config.allowed_origins)
    proxies = TrustedProxies(parse_networks(config.trusted_proxies))
    totals = FrameTotals()
    viewers = ViewerFactory(
        hub,
        SessionGate(accounts, origins),
        reactor,
        proxies=proxies,
        totals=totals,
        reactor=reactor,
    )
    camera = CameraService(hub, link, viewers, totals)
    camera.setName("camera")
    camera.setServiceParent(top)

    watcher = SessionWatcher(reactor, accounts, viewers)
    watcher.setServiceParent(top)

    metrics = DaemonMetrics()
    metrics.watch_camera(hub, totals)
    auth = Authenticator(accounts)
    csrf = CsrfTokens(config.secret_key, reactor)
    web = CamProxyWeb(
        WebDependencies(
            hub=hub,
            viewers=viewers,
            accounts=accounts,
            auth=auth,
            origins=origins,
            csrf=csrf,
            throttle=LoginThrottle(reactor),
            templates=templates_environment(asset_directory("templates")),
            static_dir=asset_directory("static"),
            clock=reactor,
            metrics=metrics,
        )
    )
    api = IntegrationApi(
        hub,
        auth,
        csrf,
        reactor,
        totals=totals,
        metrics=metrics,
        metrics_allow=parse_networks(config.metrics_allow),
    )
    root = SiteRoot(web.app.resource(), api.app.resource(), WebSocketResource(viewers))
    site = CamProxySite(root, reactor, proxies, metrics)
    http = StreamServerEndpointService(endpoint_or_exit(reactor, config.listen), site)
    http.setName("http")
    # Fail the start (not just log) when the port cannot be bound.
    http._raiseSynchronously = True
    http.setServiceParent(top)
    return top


def listening_port(top: MultiService) -> Deferred[Any]:
    """The HTTP port once listening (its number is useful when listening on port 0)."""
    http = top.getServiceNamed("http")
    assert isinstance(http, StreamServerEndpointService)
    return http._waitingForPort  # type: ignore[return-value]


def makeService(options: Options, reactor: Any = None) -> IService:
    """Entry point for twistd and ``camproxy.tac``."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert options.config is not None
    return build_service(options.config, reactor)
