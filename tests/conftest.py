"""Loopback fixtures: a demo camera and a whole daemon on 127.0.0.1, ephemeral ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import defer, task

from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.service import AccountsService
from camproxy.accounts.users import User
from camproxy.config import Config
from camproxy.fleet import CameraStack, Fleet
from camproxy.hub.hub import CameraHub
from camproxy.tap import build_service, listening_port
from camproxy.viewers.websocket import ViewerFactory
from camproxy.web.auth import SESSION_COOKIE
from tests.wsclient import RecordingViewer, connect_viewer

PASSWORD = "correct horse battery"


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as global_reactor

    return global_reactor


@attrs.define
class RunningDaemon:
    service: MultiService
    port: int
    config: Config
    reactor: Any
    _sessions: dict[str, str] = attrs.field(factory=dict)

    @property
    def accounts(self) -> AccountsService:
        accounts = self.service.getServiceNamed("accounts")
        assert isinstance(accounts, AccountsService)
        return accounts

    async def user(
        self, name: str, password: str = PASSWORD, *, admin: bool = False, control: bool = True
    ) -> User:
        """The user ``name``, created on first use."""
        users = self.accounts.users
        assert users is not None
        existing = await users.get(name)
        if existing is not None:
            return existing
        return await users.add(name, password, admin=admin, can_control=control)

    async def session(self, name: str = "viewer", **flags: Any) -> str:
        """A session id for ``name`` (created without HTTP; login has its own tests)."""
        if name not in self._sessions:
            user = await self.user(name, **flags)
            sessions = self.accounts.sessions
            assert sessions is not None
            self._sessions[name] = await sessions.create(user.id)
        return self._sessions[name]

    async def viewer(
        self, name: str = "viewer", headers: dict[str, str] | None = None, **flags: Any
    ) -> RecordingViewer:
        """A logged-in viewer socket."""
        cookie = {"Cookie": f"{SESSION_COOKIE}={await self.session(name, **flags)}"}
        return await connect_viewer(self.reactor, self.port, headers={**cookie, **(headers or {})})

    @property
    def fleet(self) -> Fleet:
        fleet = self.service.getServiceNamed("cameras")
        assert isinstance(fleet, Fleet)
        return fleet

    def camera(self, name: str = "default") -> CameraStack:
        stack = self.fleet.get(name)
        assert stack is not None, f"no camera {name!r}"
        return stack

    @property
    def hub(self) -> CameraHub:
        """The hub of the camera ``default``."""
        return self.camera().hub

    @property
    def viewers(self) -> ViewerFactory:
        """The viewer sockets of the camera ``default``."""
        factory = self.camera().viewers
        assert isinstance(factory, ViewerFactory)
        return factory

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@attrs.define
class RunningCamera:
    port: Any
    camera: Any

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/ws"


@pytest_twisted.async_yield_fixture
async def demo_camera_factory(reactor: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start demo cameras on 127.0.0.1:0 with the given knobs; all stopped afterwards."""
    from camproxy.democam.robocam import listen_demo_camera

    started: list[RunningCamera] = []

    async def start(**knobs: Any) -> RunningCamera:
        port, camera = await listen_demo_camera(reactor, "tcp:0:interface=127.0.0.1", **knobs)
        running = RunningCamera(port, camera)
        started.append(running)
        return running

    yield start
    for running in started:
        running.camera.drop_all()
        await defer.maybeDeferred(running.port.stopListening)


@pytest_twisted.async_yield_fixture
async def daemon_factory(reactor: Any, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start whole daemons (build_service) on 127.0.0.1:0; all stopped afterwards."""
    started: list[RunningDaemon] = []

    async def start(hasher: Any = None, **settings: Any) -> RunningDaemon:
        fields: dict[str, Any] = {
            "listen": "tcp:0:interface=127.0.0.1",
            "database": str(tmp_path / "camproxy.db"),
            "secret_key": "test-secret",
        }
        fields.update(settings)
        # A camera URL given is --camera: it makes the camera default.
        fields.setdefault("camera_given", "camera_url" in settings)
        config = Config(**fields)
        service = build_service(config, reactor, hasher=hasher or FastHasher())
        service.startService()
        port = await listening_port(service)
        running = RunningDaemon(service, port.getHost().port, config, reactor)
        started.append(running)
        return running

    yield start
    for running in started:
        await defer.maybeDeferred(running.service.stopService)


async def wait_until(reactor: Any, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that has no event to wait on (e.g. another process's state)."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.01, lambda: None)
