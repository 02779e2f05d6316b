"""The daemon's accounts: the database opened at start, admin bootstrap, session upkeep."""

from __future__ import annotations

import secrets
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from camproxy.accounts.database import Database, DatabaseError
from camproxy.accounts.passwords import BadPassword, BcryptHasher, IPasswordHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.tokens import TokenStore
from camproxy.accounts.users import AccountError, UserStore
from camproxy.config import Config

DEMO_ADMIN = "admin"


class AccountsService(Service):
    """Opens the user database when the daemon starts and closes it when it stops.

    ``users`` and ``sessions`` are None until the database is open; requests that
    need them wait for :meth:`when_ready` (a fraction of a second at start).
    """

    log = Logger()

    def __init__(self, reactor: Any, config: Config, hasher: IPasswordHasher | None = None) -> None:
        self._reactor = reactor
        self._config = config
        self._hasher = hasher or BcryptHasher(reactor)
        self.database: Database | None = None
        self.users: UserStore | None = None
        self.sessions: SessionStore | None = None
        self.tokens: TokenStore | None = None
        self._waiting: list[Deferred[None]] = []
        self._purge = LoopingCall(self._purge_expired)
        self._purge.clock = reactor

    def startService(self) -> None:
        super().startService()
        opening = Deferred.fromCoroutine(self._open())
        opening.addErrback(self._failed)

    async def _open(self) -> None:
        database = await Database.open(self._reactor, self._config.database, exclusive=True)
        self.database = database
        users = UserStore(database, self._hasher, self._reactor)
        sessions = SessionStore(database, self._reactor)
        await self._bootstrap_admin(users)
        self.users, self.sessions = users, sessions
        self.tokens = TokenStore(database, self._reactor)
        self._purge.start(3600, now=True)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def when_ready(self) -> Deferred[None]:
        """Fires once the database is open (at once if it is); each call a new Deferred."""
        if self.users is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    async def _bootstrap_admin(self, users: UserStore) -> None:
        config = self._config
        if config.admin_username and config.admin_password:
            if await users.ensure_admin(config.admin_username, config.admin_password):
                self.log.info(
                    "created admin {name!r} from ADMIN_USERNAME", name=config.admin_username
                )
        elif config.demo:
            password = secrets.token_urlsafe(9)
            if await users.get(DEMO_ADMIN) is None:
                await users.add(DEMO_ADMIN, password, admin=True)
            else:
                await users.set_password(DEMO_ADMIN, password)
                await users.set_active(DEMO_ADMIN, True)
                await users.set_admin(DEMO_ADMIN, True)
            self.log.warn(
                "CamProxy demo: log in as {name!r} with password {password!r}",
                name=DEMO_ADMIN,
                password=password,
            )

    def _failed(self, failure: Any) -> None:
        if failure.check(DatabaseError, AccountError, BadPassword):
            self.log.critical("camproxy: cannot start: {problem}", problem=failure.value)
        else:
            self.log.failure("camproxy: cannot open the user database", failure)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)
        if self._reactor.running:
            self._reactor.stop()

    def _purge_expired(self) -> Deferred[int] | None:
        if self.sessions is None:
            return None
        return self.sessions.purge_expired()

    def stopService(self) -> None:
        super().stopService()
        if self._purge.running:
            self._purge.stop()
        if self.database is not None:
            self.database.close()
            self.database = None
        self.users = self.sessions = None
        self.tokens = None
