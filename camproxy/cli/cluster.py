"""``camproxy cluster status``: the daemons of one CamProxy as their Redis sees them (§8).

Every daemon of a cluster keeps a key ``camproxy:node:NAME`` in Redis, refreshed every
second and gone a few seconds after the daemon stops: ``{"node", "counts": {camera:
viewers}, "holds": [cameras]}``. ``status`` reads those keys (and, for each camera it sees,
whether its holder last reported the link up) and prints them. It needs Redis only, never
the accounts database.

Redis is ``--redis URL``, else ``REDIS_URL`` from the environment or ``.env`` (as the
daemon reads it); a ``rediss://`` Redis is checked against ``--redis-ca`` (or
``REDIS_CA_FILE``), else the system's CAs. The password of the URL is never printed.

Exit status: 0 with the status on standard output (also when no daemon is alive); 1 with
one line on standard error when the URL is bad or Redis cannot be reached, logged into or
read within ``--timeout`` seconds; 2 for a usage error (no Redis given at all).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import provider

from camproxy.cli.scaffold import Call, CommandGroup, Commands, group_main
from camproxy.cli.user import format_table
from camproxy.cluster.bus import BusError, IBus
from camproxy.cluster.redisurl import RedisURL, parse_redis_url
from camproxy.config import read_environment
from camproxy.sources.cluster import PREFIX

NODE_PREFIX = f"{PREFIX}node:"
DEFAULT_TIMEOUT = 5.0
#: Where the bus logs (its warnings say why a connection failed: a refused login, TLS).
BUS_NAMESPACE = "camproxy.cluster.redisbus"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.5 <= value <= 300:
        raise argparse.ArgumentTypeError(f"must be between 0.5 and 300 seconds, not {text!r}")
    return value


def _declare(commands: Commands) -> None:
    status = commands.add(
        "status",
        "the daemons alive, the cameras each holds, viewers per daemon and camera",
        description="Read the daemons' heartbeats from the cluster's Redis: which daemons "
        "are alive, which cameras each holds, and how many viewers each has per camera.",
    )
    status.add_argument(
        "--redis",
        metavar="URL",
        help="redis://[:password@]host:port[/db], rediss://... or unix://path "
        "(default: REDIS_URL from the environment or .env)",
    )
    status.add_argument(
        "--redis-ca",
        metavar="FILE",
        help="PEM CA certificate for a rediss:// Redis (default: REDIS_CA_FILE, else the "
        "system's CAs)",
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up when Redis has not answered in this time (default: {DEFAULT_TIMEOUT:g})",
    )
    status.add_argument("--json", action="store_true", help="the status as JSON, for scripts")


# --- what the daemons say ----------------------------------------------------------------


@attrs.frozen
class NodeStatus:
    """One daemon's heartbeat."""

    node: str
    counts: dict[str, int]
    holds: tuple[str, ...]

    @property
    def viewers(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "holds": list(self.holds),
            "viewers": self.viewers,
            "counts": dict(self.counts),
        }


@attrs.frozen
class CameraStatus:
    """One camera that some daemon holds or has viewers for."""

    camera: str
    holders: tuple[str, ...]
    counts: dict[str, int]
    #: Whether the holder last reported the link up; None: no holder's report.
    link: bool | None

    @property
    def viewers(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "held_by": list(self.holders),
            "link": self.link,
            "viewers": self.viewers,
            "counts": dict(self.counts),
        }


def parse_heartbeat(key: str, value: bytes | None) -> NodeStatus | None:
    """A ``camproxy:node:NAME`` value, or None for one that expired or is not readable."""
    if value is None:
        return None
    try:
        fields = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    name = fields.get("node")
    if not isinstance(name, str):
        name = key.removeprefix(NODE_PREFIX)
    counts = fields.get("counts")
    holds = fields.get("holds")
    return NodeStatus(
        node=name,
        counts={
            str(camera): count
            for camera, count in (counts.items() if isinstance(counts, dict) else ())
            if isinstance(count, int) and not isinstance(count, bool) and count > 0
        },
        holds=tuple(sorted(str(c) for c in holds)) if isinstance(holds, list) else (),
    )


def parse_link(value: bytes | None) -> bool | None:
    """The holder's ``connected`` in a camera's state key, if it is there and readable."""
    if value is None:
        return None
    try:
        fields = json.loads(value)
    except (ValueError, RecursionError):
        return None
    connected = fields.get("connected") if isinstance(fields, dict) else None
    return connected if isinstance(connected, bool) else None


def cameras_of(nodes: Sequence[NodeStatus], links: dict[str, bool | None]) -> list[CameraStatus]:
    names = sorted({c for n in nodes for c in n.holds} | {c for n in nodes for c in n.counts})
    return [
        CameraStatus(
            camera=name,
            holders=tuple(n.node for n in nodes if name in n.holds),
            counts={n.node: n.counts[name] for n in nodes if name in n.counts},
            link=links.get(name),
        )
        for name in names
    ]


async def read_status(bus: IBus) -> tuple[list[NodeStatus], list[CameraStatus]]:
    """The daemons alive (sorted by name) and the cameras they hold or watch."""
    keys = sorted(await bus.scan(NODE_PREFIX))
    values = await bus.mget(keys)
    nodes = sorted(
        filter(None, (parse_heartbeat(k, v) for k, v in zip(keys, values, strict=True))),
        key=lambda n: n.node,
    )
    names = sorted({c for n in nodes for c in n.holds} | {c for n in nodes for c in n.counts})
    states = await bus.mget([f"{PREFIX}state:{name}" for name in names])
    links = {name: parse_link(state) for name, state in zip(names, states, strict=True)}
    return nodes, cameras_of(nodes, links)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "-"


def _link(link: bool | None) -> str:
    return {True: "up", False: "down", None: "-"}[link]


def format_status(
    shown_url: str, nodes: Sequence[NodeStatus], cameras: Sequence[CameraStatus]
) -> str:
    if not nodes:
        return f"no daemon is alive on {shown_url}"
    alive = "1 daemon" if len(nodes) == 1 else f"{len(nodes)} daemons"
    viewers = sum(n.viewers for n in nodes)
    lines = [f"{alive} alive on {shown_url}, {viewers} viewer{'' if viewers == 1 else 's'}", ""]
    rows = [("DAEMON", "HOLDS", "VIEWERS")]
    rows += [(n.node, ", ".join(n.holds) or "-", _counts(n.counts)) for n in nodes]
    lines.append(format_table(rows))
    if cameras:
        camera_rows = [("CAMERA", "HELD BY", "LINK", "VIEWERS")]
        camera_rows += [
            (
                c.camera,
                ", ".join(c.holders) or "nobody",
                _link(c.link),
                f"{c.viewers} ({_counts(c.counts)})" if c.counts else "0",
            )
            for c in cameras
        ]
        lines += ["", format_table(camera_rows)]
    return "\n".join(lines)


# --- reaching Redis ---------------------------------------------------------------------

_URL_PASSWORD = re.compile(r"(://[^/@\s]*?:)[^@\s]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s']*")


def hide_password(text: str) -> str:
    """``text`` with any Redis URL password in it replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class Connecting:
    """Waits for the bus to come up, at most ``timeout`` seconds, and knows why it did not.

    The bus itself retries quietly for as long as it runs; a status command wants an
    answer now. So a definite failure ends the wait at once: the bus's warning (a refused
    login, a certificate that does not verify) or the failure of one plain connection
    made beside it (refused, no such host).
    """

    def __init__(self, reactor: Any, bus: Any, url: RedisURL, timeout: float) -> None:
        self._reactor = reactor
        self._bus = bus
        self._url = url
        self.timeout = timeout
        self.failure: str | None = None
        self.probe_connected = False
        self._done: Deferred[bool] = Deferred()

    def _end(self, up: bool) -> None:
        if not self._done.called:
            self._done.callback(up)

    def _bus_state(self, up: bool) -> None:
        if up:
            self._end(True)

    def bus_said(self, event: dict[str, Any]) -> None:
        """A log event: the bus's warnings say why a connection did not become usable."""
        namespace = str(event.get("log_namespace", ""))
        level = event.get("log_level")
        if namespace.startswith(BUS_NAMESPACE) and level in (LogLevel.warn, LogLevel.error):
            # The bus's own fields say it shortest; its whole line otherwise.
            detail = event.get("error") or event.get("reason") or formatEvent(event)
            self.failure = hide_password(str(detail))
            self._end(False)

    def _probe(self, ca_file: str | None) -> None:
        def failed(failure: Failure) -> None:
            self.failure = self.failure or failure.getErrorMessage()
            self._end(False)

        def connected(protocol: Protocol) -> None:
            self.probe_connected = True
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        endpoint = self._url.endpoint(self._reactor, timeout=self.timeout, ca_file=ca_file)
        endpoint.connect(Factory.forProtocol(Protocol)).addCallbacks(connected, failed)

    async def wait(self, ca_file: str | None) -> bool:
        """Start the bus; whether it came up."""

        @provider(ILogObserver)
        def observer(event: dict[str, Any]) -> None:
            self.bus_said(event)

        globalLogPublisher.addObserver(observer)
        self._bus.add_observer(self._bus_state)
        deadline = self._reactor.callLater(self.timeout, self._end, False)
        try:
            self._bus.startService()
            self._probe(ca_file)
            return await self._done
        finally:
            globalLogPublisher.removeObserver(observer)
            self._bus.remove_observer(self._bus_state)
            if deadline.active():
                deadline.cancel()

    def reason(self) -> str:
        if self.failure is not None:
            return self.failure
        if self.probe_connected:
            return f"it took the connection but did not answer within {self.timeout:g} s"
        return f"no connection within {self.timeout:g} s"


def _settings(call: Call) -> tuple[str, str | None]:
    """``--redis`` and ``--redis-ca``, else the environment's, as the daemon reads them."""
    env = read_environment()
    url = call.args.redis or env.get("REDIS_URL") or None
    ca_file = call.args.redis_ca or env.get("REDIS_CA_FILE") or None
    if url is None:
        call.usage_error("no Redis to ask: give --redis URL or set REDIS_URL")
    return url, ca_file


async def _status(call: Call) -> str:
    raw_url, ca_file = _settings(call)
    timeout: float = call.args.timeout
    try:
        url = parse_redis_url(raw_url)
    except ValueError as problem:
        call.refuse(hide_password(str(problem)))
    shown = url.redacted()
    # Imported here, as the daemon does: txredisapi installs the global reactor.
    from camproxy.cluster.redisbus import RedisBus

    try:
        bus = RedisBus(
            call.reactor,
            url,
            ca_file=ca_file,
            timeout=min(2.0, timeout),
            connect_timeout=timeout,
            retry_initial=0.25,
            retry_max=1.0,
        )
    except ValueError as problem:  # the CA file
        call.refuse(hide_password(str(problem)))
    connecting = Connecting(call.reactor, bus, url, timeout)
    try:
        if not await connecting.wait(ca_file):
            call.refuse(f"cannot reach Redis {shown}: {connecting.reason()}")
        try:
            nodes, cameras = await read_status(bus)
        except BusError as problem:
            call.refuse(f"cannot read from Redis {shown}: {hide_password(str(problem))}")
    finally:
        await bus.stopService()
    if call.args.json:
        document = {
            "redis": shown,
            "nodes": [n.as_json() for n in nodes],
            "cameras": [c.as_json() for c in cameras],
        }
        return json.dumps(document, indent=2)
    return format_status(shown, nodes, cameras)


async def _perform(call: Call) -> str:
    if call.command == "status":
        return await _status(call)
    raise AssertionError(f"unknown cluster command {call.command!r}")


GROUP = CommandGroup(
    name="cluster",
    summary="the daemons of a cluster, as their Redis sees them",
    description="Look at the daemons that share one Redis (CONTRACT §8): which are alive, "
    "which cameras each holds, how many viewers each has.",
    declare=_declare,
    perform=_perform,
    database=False,
)


def main(argv: Sequence[str] | None = None) -> int:
    """``camproxy cluster ...`` alone."""
    return group_main(GROUP, argv)


if __name__ == "__main__":
    sys.exit(main())
