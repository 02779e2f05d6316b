"""Routes without sockets: Klein resources through ``treq.testing.StubTreq``."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from camproxy.accounts.access import Level
from camproxy.accounts.principal import Principal
from camproxy.fleet import CameraSpec, Fleet
from camproxy.hub.hub import CameraHub
from camproxy.ops.metrics import DaemonMetrics
from camproxy.web.api import IntegrationApi
from camproxy.web.cameras import CameraAccess
from camproxy.web.csrf import CsrfTokens
from camproxy.web.origins import OriginPolicy
from camproxy.web.pages import ClusterHealth, health_document
from camproxy.web.site import SiteRoot
from tests.fakes import FakeSource, FakeViewer


def fleet(clock: Clock) -> Fleet:
    """A fleet of fake cameras: ``default`` connected, ``garden`` watched but down."""

    def hub(spec: CameraSpec) -> CameraHub:
        return CameraHub(clock, max_fps=10, idle_close=30, name=spec.name)

    def source(spec: CameraSpec, hub: CameraHub, listener: Any) -> FakeSource:
        return FakeSource(listener, connect_on_open=spec.name == "default")

    cameras = Fleet(clock, hub, source, lambda stack: None)
    cameras.apply(
        [
            CameraSpec("default", "ws://cam/ws"),
            CameraSpec("garden", "http://garden/", access=Level.NONE),
        ]
    )
    cameras.startService()
    garden = cameras.get("garden")
    assert garden is not None
    garden.hub.attach(FakeViewer())
    return cameras


def test_health_counts_cameras_and_names_none() -> None:
    cameras = fleet(Clock())
    document = health_document(cameras)
    assert document == {
        "status": "degraded",
        "esp32_connected": True,
        "clients": 1,
        "cameras": {"total": 2, "connected": 1, "degraded": 1},
    }
    clustered = health_document(cameras, ClusterHealth("node-1", lambda: False))
    assert (clustered["node"], clustered["redis"], clustered["status"]) == (
        "node-1",
        False,
        "degraded",
    )


def api(principal: Principal | None) -> Any:
    clock = Clock()
    cameras = fleet(clock)

    class Auth:
        async def principal(self, request: Any, *, allow_query_token: bool) -> Principal | None:
            return principal

    routes = IntegrationApi(
        CameraAccess(cameras),
        Auth(),  # type: ignore[arg-type]
        CsrfTokens("secret", clock),
        clock,
        metrics=DaemonMetrics(),
    )
    return StubTreq(routes.app.resource())


CAROL = Principal(user_id="u", username="carol", is_admin=False, can_control=True)


@pytest_twisted.ensureDeferred
async def test_the_api_without_credentials_is_401() -> None:
    client = api(None)
    response = await client.get("http://x/api/cameras")
    assert response.code == 401
    assert json.loads(await response.content()) == {"error": "authentication required"}


@pytest_twisted.ensureDeferred
async def test_a_camera_one_may_not_see_answers_as_one_that_does_not_exist() -> None:
    client = api(CAROL)
    listed = json.loads(await (await client.get("http://x/api/cameras")).content())
    assert [c["name"] for c in listed] == ["default"]
    hidden = await client.get("http://x/api/cameras/garden/status")
    missing = await client.get("http://x/api/cameras/nowhere/status")
    assert hidden.code == missing.code == 404
    assert await hidden.content() == await missing.content()


@pytest_twisted.ensureDeferred
async def test_the_site_refuses_sockets_from_origins_not_allowed() -> None:
    reached: list[str] = []

    class Socket(Resource):
        isLeaf = True

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def render(self, request: Any) -> bytes:
            reached.append(self.name)
            return b"socket"

    root = SiteRoot(Resource(), {}, Socket, OriginPolicy())
    client: Any = StubTreq(root)
    refused = await client.get("http://cam.lan/ws", headers={"Origin": "null"})
    assert refused.code == 403 and reached == []
    allowed = await client.get("http://cam.lan/cam/garden/ws", headers={"Origin": "http://cam.lan"})
    assert allowed.code == 200 and reached == ["garden"]
    assert (await client.get("http://cam.lan/ws")).code == 200 and reached[-1] == "default"
