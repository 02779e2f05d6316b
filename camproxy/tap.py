"""``twistd camproxy``: the options and the one function that builds the daemon."""

from __future__ import annotations

import gc
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from hyperlink import URL
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application, IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.web.resource import IResource

from camproxy.accounts.cameras import CameraRecord, CameraSeed
from camproxy.accounts.cameras import version as camera_version
from camproxy.accounts.database import DatabaseError
from camproxy.accounts.passwords import IPasswordHasher
from camproxy.accounts.principal import PrincipalRefresher
from camproxy.accounts.service import AccountsService, StartupError, StartupSettings
from camproxy.config import Config, ConfigError, build_config, read_environment
from camproxy.demo import DemoCameras
from camproxy.fleet import DEFAULT_CAMERA, CameraSpec, CameraStack, CameraWatcher, Fleet
from camproxy.hub.hub import CameraHub
from camproxy.hub.source import ICameraSource, ISourceListener
from camproxy.ops.logs import make_observer, twistd_primary_stream
from camproxy.ops.metrics import ClusterReading, DaemonMetrics
from camproxy.sources.cluster import ClusterNode
from camproxy.sources.http import HttpSourceSettings, RoutedEndpointFactory
from camproxy.sources.kinds import default_kind, likely_capabilities, make_source, url_problem
from camproxy.sources.probe import ProbeResult, probe
from camproxy.sources.robocam.link import CameraSettings, RoboCamSource
from camproxy.trust import load_ca_file
from camproxy.viewers.websocket import ViewerFactory
from camproxy.web.admin import AdminDependencies, AdminRoutes, AdminSections
from camproxy.web.admin_cameras import AdminCameraDependencies, AdminCameraRoutes, CameraTools
from camproxy.web.api import IntegrationApi
from camproxy.web.apitokens import ApiTokenDependencies, ApiTokenRoutes
from camproxy.web.assets import asset_directory
from camproxy.web.auth import Authenticator
from camproxy.web.cameras import CameraAccess
from camproxy.web.csrf import CsrfTokens
from camproxy.web.forms import FormPages
from camproxy.web.gate import CameraGate, CredentialWatcher, ViewerDirectory
from camproxy.web.login import LoginDependencies, LoginRoutes
from camproxy.web.login_throttle import LoginThrottle
from camproxy.web.origins import OriginPolicy
from camproxy.web.pages import ClusterHealth, PageDependencies, PageRoutes
from camproxy.web.proxies import TrustedProxies, parse_networks
from camproxy.web.rendering import Renderer, templates_environment
from camproxy.web.requestlog import CamProxySite
from camproxy.web.site import SiteRoot


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
        ["camera", None, None, "The camera default's URL, e.g. ws://192.168.1.100:80/ws."],
        ["database", None, None, "SQLite file, or postgresql://user:password@host:port/db."],
        ["redis", None, None, "redis://[:password@]host:port[/db] of a cluster of daemons."],
        ["redis-ca", None, None, "PEM file of the CA that signed a rediss:// Redis's cert."],
        ["node", None, None, "This daemon's name in a cluster (default: host name:port)."],
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


def cluster_node(config: Config, reactor: Any) -> tuple[Service, ClusterNode] | None:
    """With ``--redis``: the bus (a service) and this daemon's side of it (CONTRACT §8)."""
    if config.redis_url is None:
        return None
    # Imported here: txredisapi installs the global reactor when it is imported.
    from camproxy.cluster.redisbus import RedisBus

    bus = RedisBus(reactor, config.redis_url, ca_file=config.redis_ca)
    # Leases are timed on a monotonic clock: a wall-clock jump must not keep a link alive.
    return bus, ClusterNode(reactor, bus, config.node, now=time.monotonic)


def cluster_health(node: ClusterNode | None) -> ClusterHealth | None:
    if node is None:
        return None
    bus = node.bus
    return ClusterHealth(node.node_name, lambda: bool(bus.connected))


def cluster_reading(node: ClusterNode) -> ClusterReading:
    """What ``/metrics`` shows of the cluster."""
    return ClusterReading(
        bus_connected=bool(node.bus.connected),
        other_daemons=len(node.others()),
        publish_failures=node.publish_failures,
        cameras={
            camera: (
                source.holding,
                source.frames_published,
                source.frames_followed,
                source.frames_fenced,
            )
            for camera, source in node.sources.items()
        },
    )


def startup_settings(config: Config, demo: DemoCameras | None) -> StartupSettings:
    """What the accounts' start-up work needs: the database, the bootstrap admin and the
    cameras to make sure of (``--camera`` as ``default``, or the demo's)."""
    if demo is not None:
        seeds = tuple(CameraSeed(s.name, s.url, s.kind, s.title) for s in demo.specs())
    elif config.camera_given:
        seeds = (CameraSeed(DEFAULT_CAMERA, config.camera_url),)
    else:
        seeds = ()
    return StartupSettings(
        database=config.database,
        admin_username=config.admin_username,
        admin_password=config.admin_password,
        demo=config.demo,
        cameras=seeds,
    )


def camera_spec(record: CameraRecord, config: Config) -> CameraSpec:
    """A stored camera as the fleet runs it: its own frame rate and idle delay, else the
    daemon's ``--max-fps`` and ``--idle-close``."""
    return CameraSpec(
        name=record.name,
        url=record.url,
        title=record.title,
        kind=record.kind,
        max_fps=record.max_fps if record.max_fps is not None else config.max_fps,
        idle_close=record.idle_close if record.idle_close is not None else config.idle_close,
        access=record.access,
        control=record.control,
    )


class CameraBuilders:
    """How each camera's hub, source and viewer sockets are made, for the fleet."""

    def __init__(
        self,
        reactor: Any,
        config: Config,
        auth: Authenticator,
        proxies: TrustedProxies,
        demo: DemoCameras | None,
        node: ClusterNode | None = None,
    ) -> None:
        self._reactor = reactor
        self._node = node
        self._config = config
        self._auth = auth
        self._proxies = proxies
        self._demo = demo
        self._camera_trust = camera_trust_root(config)
        self.cameras: CameraAccess | None = None
        self._nowhere: IResource | None = None

    def hub(self, spec: CameraSpec) -> CameraHub:
        return CameraHub(
            self._reactor,
            max_fps=spec.max_fps,
            idle_close=spec.idle_close,
            request_timeout=self._config.frame_timeout,
            max_frame_bytes=self._config.max_frame_bytes,
            control_mode=spec.control,
            name=spec.name,
        )

    def source(self, spec: CameraSpec, hub: CameraHub, listener: ISourceListener) -> ICameraSource:
        """The camera's source: in a cluster, the cluster's view of it (which opens the
        real one while this daemon holds the camera); else the source of its kind."""
        node = self._node
        if node is None:
            return self._real_source(spec, listener)
        kind = spec.kind or default_kind(spec.url) or "mjpeg"
        return node.source(
            spec.name,
            hub,
            listener,
            lambda real_listener: self._real_source(spec, real_listener),
            kind=kind,
            capabilities=likely_capabilities(kind),
        )

    def _http_settings(self, spec: CameraSpec) -> HttpSourceSettings:
        config, demo = self._config, self._demo
        endpoint_factory = None
        if demo is not None:
            routes = {key: f"unix:path={path}" for key, path in demo.sockets.items()}
            endpoint_factory = RoutedEndpointFactory(self._reactor, routes)
        return HttpSourceSettings(
            url=spec.url,
            max_fps=spec.max_fps,
            max_frame_bytes=config.max_frame_bytes,
            connect_timeout=config.camera_connect_timeout,
            trust_root=self._camera_trust,
            endpoint_factory=endpoint_factory,
        )

    def _real_source(self, spec: CameraSpec, listener: ISourceListener) -> ICameraSource:
        """The source of the camera's kind (or of its URL's default kind)."""
        return make_source(
            self._reactor,
            listener,
            self._http_settings(spec),
            spec.kind,
            robocam=lambda robocam_listener, policy: self._robocam(spec, robocam_listener, policy),
        )

    def probe(self, url: str, kind: str | None) -> Deferred[ProbeResult]:
        """The admin page's "test connection": the link the daemon would open, once."""
        spec = CameraSpec(name="probe", url=url, kind=kind, max_fps=self._config.max_fps)
        return probe(
            self._reactor,
            url,
            kind,
            PROBE_SECONDS,
            settings=self._http_settings(spec),
            robocam=lambda listener, policy: self._robocam(spec, listener, policy),
        )

    def _robocam(
        self,
        spec: CameraSpec,
        listener: ISourceListener,
        retry_policy: Callable[[int], float] | None = None,
    ) -> ICameraSource:
        config = self._config
        settings = CameraSettings(
            url=spec.url,
            max_frame_bytes=config.max_frame_bytes,
            connect_timeout=config.camera_connect_timeout,
            ping_interval=config.camera_ping_interval,
            ping_timeout=config.camera_ping_interval,
            trust_root=self._camera_trust,
        )
        endpoint = None
        if self._demo is not None:
            # A demo camera's host and port are routed to its socket, as the HTTP ones are.
            url = URL.from_text(spec.url)
            path = self._demo.unix_socket(url.host, url.port or 80)
            endpoint = UNIXClientEndpoint(self._reactor, path) if path is not None else None
        return RoboCamSource(
            self._reactor, listener, settings, endpoint=endpoint, retry_policy=retry_policy
        )

    def _factory(self, hub: CameraHub, camera: str, fields: Any) -> ViewerFactory:
        proxies = self._proxies
        assert self.cameras is not None
        return ViewerFactory(
            hub,
            CameraGate(self._auth, self.cameras, camera),
            self._reactor,
            camera_fields=fields,
            is_secure=lambda transport, peer, headers: proxies.is_secure(
                peer, ISSLTransport.providedBy(transport), headers.get("x-forwarded-proto")
            ),
            client_address=lambda peer, headers: proxies.client_address(
                peer, headers.get("x-forwarded-for")
            ),
            reactor=self._reactor,
        )

    def viewers(self, stack: CameraStack) -> ViewerFactory:
        return self._factory(
            stack.hub,
            stack.name,
            lambda: {"camera": stack.name, "title": stack.title, "kind": stack.kind},
        )

    def nowhere(self) -> IResource:
        """The viewer socket for a camera that does not exist: it refuses as for one the
        viewer may not see."""
        if self._nowhere is None:
            # Never started: its gate refuses every handshake as for an invisible camera.
            nowhere = CameraHub(self._reactor, max_fps=1, idle_close=0)
            self._nowhere = WebSocketResource(self._factory(nowhere, "", dict))
        return self._nowhere


#: Seconds the admin page's "test connection" counts frames (after the first one).
PROBE_SECONDS = 2.0


#: Connections the kernel queues before the daemon accepts them: a crowd reconnecting
#: after a restart must not overflow Twisted's default of 50 (each overflow costs a
#: client a one-second SYN retry). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """``description`` with ``backlog=`` added for stream endpoints that take one."""
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl", "unix") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def camera_trust_root(config: Config) -> Any:
    """``--camera-ca`` read once, at start (None: the system's CAs); one line and exit 1
    if it is not a usable PEM file."""
    if config.camera_ca is None:
        return None
    try:
        return load_ca_file(config.camera_ca, "camera CA file")
    except ValueError as problem:
        raise SystemExit(f"camproxy: error: {problem}") from None


def endpoint_or_exit(reactor: Any, description: str) -> Any:
    try:
        return serverFromString(reactor, with_backlog(description))
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
    demo = DemoCameras(reactor) if config.demo else None
    try:
        # Opened, upgraded and bootstrapped now, before any port is bound.
        accounts = AccountsService.open(reactor, startup_settings(config, demo), hasher)
        cameras_version = accounts.database.read_now(camera_version)
        records = accounts.cameras.list_now()
        accounts.database.release_connections()
    except (StartupError, DatabaseError) as problem:
        raise SystemExit(f"camproxy: error: {problem}") from None
    top = MultiService()
    top.setName("camproxy")

    accounts.setName("accounts")
    accounts.setServiceParent(top)
    cluster = cluster_node(config, reactor)
    node = None
    if cluster is not None:
        # Started before the cameras and stopped after them, so that a holder can still
        # give its leases up on the bus when the daemon stops.
        bus, node = cluster
        bus.setName("bus")
        bus.setServiceParent(top)
        node.setName("cluster")
        node.setServiceParent(top)

    origins = OriginPolicy(config.allowed_origins)
    proxies = TrustedProxies(parse_networks(config.trusted_proxies))
    auth = Authenticator(accounts, reactor)
    if demo is not None:
        demo.setName("democam")
        demo.setServiceParent(top)
    builders = CameraBuilders(reactor, config, auth, proxies, demo, node)
    fleet = Fleet(reactor, builders.hub, builders.source, builders.viewers)
    fleet.setName("cameras")
    fleet.setServiceParent(top)
    cameras = CameraAccess(fleet)
    builders.cameras = cameras
    if node is not None:
        fleet.on_removed = node.forget
    fleet.apply(camera_spec(record, config) for record in records)

    async def load_cameras() -> list[CameraSpec]:
        return [camera_spec(record, config) for record in await accounts.cameras.list()]

    camera_watcher = CameraWatcher(
        reactor,
        fleet,
        accounts.cameras.version,
        lambda: Deferred.fromCoroutine(load_cameras()),
    )
    camera_watcher.saw(cameras_version)
    camera_watcher.setName("camera-watcher")
    camera_watcher.setServiceParent(top)

    directory = ViewerDirectory(fleet)
    refresher = PrincipalRefresher(
        accounts.database, accounts.sessions, accounts.tokens, accounts.cameras
    )
    watcher = CredentialWatcher(reactor, refresher, directory, cameras)
    # A camera's default access or control mode changed: check its viewers now.
    fleet.on_access_changed = lambda names: watcher.check()
    watcher.setName("credentials")
    watcher.setServiceParent(top)

    metrics = DaemonMetrics()
    metrics.watch_cameras(lambda: ((stack.name, stack.hub) for stack in fleet))
    if node is not None:
        metrics.watch_cluster(partial(cluster_reading, node))
    csrf = CsrfTokens(config.secret_key, reactor)
    renderer = Renderer(templates_environment(asset_directory("templates")))
    login = LoginRoutes(
        LoginDependencies(
            accounts=accounts,
            auth=auth,
            csrf=csrf,
            origins=origins,
            throttle=LoginThrottle(reactor),
            directory=directory,
            renderer=renderer,
            metrics=metrics,
        )
    )
    forms = FormPages(auth=auth, csrf=csrf, origins=origins, renderer=renderer)
    admin = AdminRoutes(AdminDependencies(accounts=accounts, forms=forms, directory=directory))

    async def apply_camera_changes() -> None:
        # A change made on the admin page: apply it now, then check viewers' access.
        await camera_watcher.check()
        await watcher.check()

    admin_cameras = AdminCameraRoutes(
        AdminCameraDependencies(
            accounts=accounts,
            forms=forms,
            fleet=fleet,
            tools=CameraTools(
                url_problem=url_problem,
                probe=builders.probe,
                apply_changes=lambda: Deferred.fromCoroutine(apply_camera_changes()),
            ),
        )
    )
    api_tokens = ApiTokenRoutes(
        ApiTokenDependencies(accounts=accounts, forms=forms, directory=directory, cameras=cameras)
    )
    pages = PageRoutes(
        PageDependencies(
            fleet=fleet,
            cameras=cameras,
            auth=auth,
            csrf=csrf,
            renderer=renderer,
            static_dir=asset_directory("static"),
            cluster=cluster_health(node),
        )
    )
    api = IntegrationApi(
        cameras,
        auth,
        csrf,
        reactor,
        metrics=metrics,
        metrics_allow=parse_networks(config.metrics_allow),
    )
    api_resource = api.app.resource()
    root = SiteRoot(
        pages.app.resource(),
        {
            b"login": login.app.resource(),
            b"logout": login.app.resource(),
            b"admin": AdminSections(
                admin.app.resource(),
                dict.fromkeys((b"cameras", b"probe"), admin_cameras.app.resource()),
            ),
            b"tokens": api_tokens.app.resource(),
            b"api": api_resource,
            b"stream.mjpg": api_resource,
            b"snapshot.jpg": api_resource,
            b"metrics": api_resource,
        },
        lambda camera: (
            WebSocketResource(stack.viewers)
            if (stack := fleet.get(camera)) is not None
            else builders.nowhere()
        ),
        origins,
    )
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


def exit_zero_after_clean_shutdown(reactor: Any) -> None:
    """After a clean shutdown on SIGTERM or SIGINT, let twistd exit with status 0.

    Stock twistd re-raises the signal once the reactor has stopped, so the process ends
    with status 143 (or 130), which Docker, supervisord, runit and Kubernetes count as a
    failure. The shutdown itself (viewers closed with 1001, the camera told goodbye) is
    done by then; only the signal that twistd would re-raise is forgotten.
    """

    def forget_signal() -> None:
        if getattr(reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT):
            reactor._exitSignal = None

    reactor.addSystemEventTrigger("after", "shutdown", forget_signal)


def freeze_startup_objects(reactor: Any) -> None:
    """Once running, exempt everything built so far from the garbage collector's scans.

    The daemon holds ~125,000 tracked objects after start-up (modules, classes, routes,
    templates), nearly all of them for its whole life. Every full collection walked them
    all: 70-80 ms here, during which no frame went out and ``/health`` did not answer.
    Frozen, a full collection scans only what came later (``gc.freeze``, Python 3.7+).
    """
    reactor.callWhenRunning(gc.freeze)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Entry point for twistd and ``camproxy.tac``."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    assert options.config is not None
    service = build_service(options.config, reactor)
    exit_zero_after_clean_shutdown(reactor)
    freeze_startup_objects(reactor)
    return service


def tac_application() -> Componentized:
    """The application of ``camproxy.tac``: the same options, from the environment only
    (``CAMPROXY_DEMO=1`` is ``--demo``), logging as ``twistd camproxy`` does."""
    options = Options()
    options.parseOptions([])
    config = options.config
    assert config is not None
    application = Application("camproxy")
    application.setComponent(
        ILogObserver,
        make_observer(
            level=config.log_level,
            fmt=config.log_format,
            primary=sys.stdout,
            log_file=config.log_file,
        ),
    )
    makeService(options).setServiceParent(application)
    return application
