"""Where the accounts live: a SQLite file (or memory) or a PostgreSQL database.

One setting names it, ``--database`` or ``DATABASE_URL``, in one of these forms:

- a plain path, ``robocam.db`` or ``/var/lib/camproxy/robocam.db`` (``--database`` only);
- ``sqlite:///relative.db``, ``sqlite:////absolute/path.db``; ``sqlite://`` or
  ``sqlite:///:memory:`` for a private in-memory database;
- ``postgresql://user:password@host:port/dbname`` (or ``postgresql+psycopg://``, the
  driver CamProxy uses either way: psycopg 3), with libpq's query parameters
  (``?sslmode=require``).

The password of a PostgreSQL URL is never shown: ``display`` and ``str()`` print
``***`` in its place, and every message about a database names it that way.
"""

from __future__ import annotations

import re
from typing import Final

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MEMORY: Final = ":memory:"
DEFAULT_DATABASE: Final = "robocam.db"
HIDDEN: Final = "***"

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_POSTGRESQL_SCHEMES: Final = ("postgresql", "postgresql+psycopg")
_FORMS: Final = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user:password@host:port/dbname"
)


class BadDatabaseLocation(ValueError):
    """A database setting names no usable database; the message is one line."""


@attrs.frozen
class DatabaseLocation:
    """A parsed database setting. Build one with :func:`parse_location`.

    :ivar path: the SQLite file, or ``":memory:"``; None for PostgreSQL.
    :ivar url: the PostgreSQL URL (driver ``postgresql+psycopg``); None for SQLite.
    """

    path: str | None = None
    url: URL | None = attrs.field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.path is not None

    @property
    def is_postgresql(self) -> bool:
        return self.url is not None

    @property
    def is_memory(self) -> bool:
        return self.path == MEMORY

    @property
    def is_file(self) -> bool:
        """A SQLite file (not memory): the kind that has a lock file and backups."""
        return self.path is not None and self.path != MEMORY

    @property
    def display(self) -> str:
        """The path, or the URL with ``***`` for its password: safe for logs and errors."""
        if self.path is not None:
            return self.path
        assert self.url is not None
        return hide_password(self.url)

    @property
    def password(self) -> str | None:
        """The PostgreSQL password, to scrub from driver messages; None for SQLite."""
        if self.url is None or self.url.password is None:
            return None
        return str(self.url.password)

    def setting(self) -> str:
        """The setting as ``Config.database`` keeps it: the path, or the full URL."""
        if self.path is not None:
            return self.path
        assert self.url is not None
        return self.url.render_as_string(hide_password=False)

    def __str__(self) -> str:
        return self.display


def hide_password(url: URL) -> str:
    """``url`` as text, ``postgresql://`` style, with ``***`` for any password."""
    shown = url.set(drivername="postgresql") if url.drivername in _POSTGRESQL_SCHEMES else url
    return shown.render_as_string(hide_password=True)


def mask(text: str) -> str:
    """A database setting made safe to show: a URL's password becomes ``***``."""
    if not _SCHEME.match(text):
        return text
    try:
        return hide_password(make_url(text))
    except (ArgumentError, ValueError):
        # Unparsable: hide everything between "://" and the last "@".
        return re.sub(r"(://)[^/]*@", rf"\1{HIDDEN}@", text)


def parse_location(setting: str, *, source: str = "DATABASE_URL") -> DatabaseLocation:
    """Parse a database setting (a path or a URL, see the module docstring).

    ``source`` names the setting in error messages (``DATABASE_URL``, ``--database``).
    A plain path is taken as it is, unless it looks like a URL (``scheme://``).
    Raises :class:`BadDatabaseLocation` with a one-line message that never shows a
    password.
    """
    text = setting.strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        if not text:
            raise BadDatabaseLocation(f"{source} is empty: {_FORMS}")
        if source == "DATABASE_URL":
            raise BadDatabaseLocation(f"{source} {mask(text)!r} is not supported: {_FORMS}")
        return DatabaseLocation(path=setting)
    name = scheme.group(1).lower()
    if name == "sqlite":
        return DatabaseLocation(path=_sqlite_path(text, source))
    if name in _POSTGRESQL_SCHEMES:
        return DatabaseLocation(url=_postgresql_url(text, source))
    if name.startswith("postgresql+"):
        raise BadDatabaseLocation(
            f"{source} {mask(text)!r}: CamProxy talks to PostgreSQL with psycopg 3; "
            "use postgresql:// or postgresql+psycopg://"
        )
    raise BadDatabaseLocation(f"{source} {mask(text)!r} is not supported: {_FORMS}")


def _sqlite_path(url: str, source: str) -> str:
    """The file path of a ``sqlite:`` URL, as the Flask version understood it."""
    prefix = "sqlite:///"
    if url in ("sqlite://", "sqlite:///:memory:"):
        return MEMORY
    if not url.startswith(prefix):
        raise BadDatabaseLocation(f"{source} {url!r} is not supported: {_FORMS}")
    path = url[len(prefix) :]
    if not path or "?" in path:
        raise BadDatabaseLocation(
            f"{source} {url!r} must name a file, e.g. sqlite:///robocam.db "
            "(query parameters are not supported)"
        )
    return path


def _postgresql_url(text: str, source: str) -> URL:
    try:
        url = make_url(text)
        port = url.port
    except (ArgumentError, ValueError):
        raise BadDatabaseLocation(
            f"{source} {mask(text)!r} is not a valid URL: "
            "use postgresql://user:password@host:port/dbname"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise BadDatabaseLocation(f"{source} {mask(text)!r} has an invalid port")
    if not url.database:
        raise BadDatabaseLocation(
            f"{source} {mask(text)!r} names no database: "
            "use postgresql://user:password@host:port/dbname"
        )
    return url.set(drivername="postgresql+psycopg")
