"""How long the daemon's most frequent query takes: a session lookup, on each engine.

Printed (``pytest -s``) as p50/p99 over 1,000 lookups made one after another, each
through the query thread pool as the daemon makes them; the bound asserted is loose, to
catch a query that went wrong (a lost index, a new round trip per row), not to time the
machine.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from camproxy.accounts.passwords import FastHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.users import UserStore
from tests import stores

shared_postgres = stores.shared_postgres
database_url = stores.database_url

LOOKUPS = 1000


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_session_lookup_latency(reactor: Any, database_url: str) -> None:
    database = stores.open_database(reactor, database_url)
    try:
        clock = Clock()
        clock.advance(1_700_000_000)
        users = UserStore(database, FastHasher(), clock)
        sessions = SessionStore(database, clock)
        # Some company for the row looked up: 200 users with 5 sessions each.
        ids = []
        for n in range(200):
            user = await users.add(f"user{n}", "password1")
            ids += [await sessions.create(user.id) for _ in range(5)]
        for session_id in ids[:50]:
            assert await sessions.lookup(session_id) is not None
        samples = []
        for n in range(LOOKUPS):
            started = time.perf_counter()
            found = await sessions.lookup(ids[(n * 7) % len(ids)])
            samples.append(time.perf_counter() - started)
            assert found is not None
        samples.sort()
        p50, p99 = samples[LOOKUPS // 2], samples[LOOKUPS * 99 // 100]
        print(
            f"\nsession lookup on {database.location.display}: p50 {p50 * 1e6:.0f} us, "
            f"p99 {p99 * 1e6:.0f} us ({LOOKUPS} lookups)"
        )
        assert p99 < 0.05
    finally:
        database.close()
