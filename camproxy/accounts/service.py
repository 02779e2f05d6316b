"""The daemon's accounts: the database opened before the port, admin bootstrap, upkeep.

:meth:`AccountsService.open` does the start-up work while the daemon is being built
(``tap.build_service``, which ``twistd``'s ``makeService`` calls before the reactor runs
and before it daemonizes): it opens the database, upgrades its schema and creates the
bootstrap admin, blocking (bcrypt too: nothing is served yet), and leaves no thread and
no connection behind to cross the fork. Any failure there is a :class:`StartupError`
with a one-line message, and the daemon does not start. When the service starts it takes
the SQLite file's lock and starts the query threads; requests can be served from then
on, and ``users``, ``sessions`` and ``tokens`` are never None.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from camproxy.accounts.cameras import CameraSeed, CameraStore
from camproxy.accounts.database import Database, DatabaseError, check_not_in_use
from camproxy.accounts.passwords import BadPassword, BcryptHasher, IPasswordHasher
from camproxy.accounts.sessions import SessionStore
from camproxy.accounts.tokens import TokenStore
from camproxy.accounts.users import AccountError, UserStore

DEMO_ADMIN: Final = "admin"
#: Seconds between deletions of expired sessions.
PURGE_INTERVAL: Final = 3600


class StartupError(Exception):
    """The accounts cannot start; the message is one line, fit for a user."""


@attrs.frozen
class StartupSettings:
    """What the accounts' start-up work needs to know of the daemon's configuration."""

    database: str
    admin_username: str | None = None
    admin_password: str | None = None
    demo: bool = False
    #: Cameras made sure of at start: ``--camera`` (or ``ESP32CAM_*``) as ``default``,
    #: the demo's cameras.
    cameras: tuple[CameraSeed, ...] = ()


class AccountsService(Service):
    """The open accounts database and its stores; closes the database when it stops.

    Build it with :meth:`open`. ``database``, ``users``, ``sessions`` and ``tokens`` are
    set from then on (after ``stopService`` their queries fail with ``DatabaseError``).
    """

    log = Logger()

    def __init__(self, reactor: Any, database: Database, hasher: IPasswordHasher) -> None:
        """Use :meth:`open`, which also bootstraps the admin."""
        self._reactor = reactor
        self.database = database
        self.users = UserStore(database, hasher, reactor)
        self.sessions = SessionStore(database, reactor)
        self.tokens = TokenStore(database, reactor)
        self.cameras = CameraStore(database, reactor)
        self._purge = LoopingCall(lambda: Deferred.fromCoroutine(self._purge_expired()))
        self._purge.clock = reactor

    @classmethod
    def open(
        cls, reactor: Any, config: StartupSettings, hasher: IPasswordHasher | None = None
    ) -> AccountsService:
        """Open and upgrade ``config.database``, create the bootstrap admin and the camera
        ``default`` (CONTRACT §6). Blocks.

        ``ADMIN_USERNAME``/``ADMIN_PASSWORD``: that admin is created if missing (an
        existing user is left alone). ``--demo`` without them: the user ``admin`` is
        created or reset with a fresh random password, which is logged. Raises
        :class:`StartupError` (a SQLite file another daemon holds, a database that
        cannot be opened or upgraded, an invalid bootstrap name or password).
        """
        try:
            check_not_in_use(config.database)
            database = Database.open(reactor, config.database)
        except DatabaseError as problem:
            raise StartupError(str(problem)) from None
        service = cls(reactor, database, hasher or BcryptHasher(reactor))
        try:
            service._bootstrap_admin(config)
            for note in service.cameras.ensure_now(config.cameras):
                cls.log.info("{note}", note=note)
        except (DatabaseError, AccountError, BadPassword) as problem:
            database.close()
            raise StartupError(str(problem)) from None
        except BaseException:
            database.close()
            raise
        database.release_connections()
        return service

    def _bootstrap_admin(self, config: StartupSettings) -> None:
        if config.admin_username and config.admin_password:
            if self.users.ensure_admin_now(config.admin_username, config.admin_password):
                self.log.info(
                    "created admin {name!r} from ADMIN_USERNAME", name=config.admin_username
                )
        elif config.demo:
            password = secrets.token_urlsafe(9)
            self.users.reset_admin_now(DEMO_ADMIN, password)
            self.log.warn(
                "CamProxy demo: log in as {name!r} with password {password!r}",
                name=DEMO_ADMIN,
                password=password,
            )

    def startService(self) -> None:
        super().startService()
        try:
            self.database.claim()
        except DatabaseError as problem:
            self.log.critical("camproxy: cannot start: {problem}", problem=problem)
            if self._reactor.running:
                self._reactor.stop()
            return
        self.database.start()
        self._purge.start(PURGE_INTERVAL, now=True)

    async def _purge_expired(self) -> None:
        try:
            await self.sessions.purge_expired()
        except DatabaseError as problem:
            # Tried again at the next interval; the loop must outlive an outage.
            self.log.warn("could not delete expired sessions: {problem}", problem=problem)

    def stopService(self) -> None:
        super().stopService()
        if self._purge.running:
            self._purge.stop()
        self.database.close()
