"""bcrypt and the database stay off the reactor thread: logins never stall the video."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from camproxy.accounts.passwords import BcryptHasher
from tests import stores
from tests.browserlike import Browser
from tests.conftest import PASSWORD
from tests.wsclient import close_viewer

shared_postgres = stores.shared_postgres
database_url = stores.database_url


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_twenty_parallel_logins_do_not_stall_frames(
    reactor: Any, demo_camera_factory: Any, daemon_factory: Any, database_url: str
) -> None:
    camera = await demo_camera_factory(push_frames=False)
    daemon = await daemon_factory(
        camera_url=camera.url,
        max_fps=20,
        hasher=BcryptHasher(reactor, rounds=12),
        database=database_url,
    )
    await daemon.user("alice")
    viewer = await daemon.viewer()
    await viewer.wait_frames(5)

    frames_before = len(viewer.frames)
    started = reactor.seconds()
    results = await defer.gatherResults(
        [defer.ensureDeferred(Browser(daemon.url).login("alice", PASSWORD)) for _ in range(20)]
    )
    elapsed = reactor.seconds() - started
    frames = len(viewer.frames) - frames_before
    assert [page.code for page in results] == [302] * 20
    fps = frames / elapsed
    print(
        f"\n20 parallel logins (bcrypt cost 12, {daemon.accounts.database.location.display}): "
        f"{elapsed:.2f} s, "
        f"{20 / elapsed:.1f} logins/s; viewer frame rate meanwhile {fps:.1f} fps"
    )
    # Frames kept flowing through the whole burst (the rate itself is reported above).
    assert frames >= 5
    await close_viewer(viewer)
