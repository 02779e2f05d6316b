"""Redis URLs (``redis://``, ``rediss://``, ``unix://``) and the endpoints they name.

Parsing is separate from connecting so that a bad ``--redis`` is refused at start with a
one-line message, before anything listens or connects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS

from camproxy.trust import load_ca_file

DEFAULT_PORT = 6379

Scheme = Literal["redis", "rediss", "unix"]


@attrs.frozen
class RedisURL:
    """Where a Redis is and how to log in: the parsed form of a Redis URL."""

    scheme: Scheme
    host: str | None = None
    port: int | None = None
    path: str | None = None
    db: int = 0
    username: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def redacted(self) -> str:
        """The URL without its password, for logs and ``/health``."""
        login = ""
        if self.username or self.password:
            login = f"{self.username or ''}{':***' if self.password else ''}@"
        if self.scheme == "unix":
            db = f"?db={self.db}" if self.db else ""
            return f"unix://{login}{self.path}{db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{login}{host}:{self.port}/{self.db}"

    def endpoint(
        self, reactor: object, *, timeout: float = 5.0, ca_file: str | Path | None = None
    ) -> IStreamClientEndpoint:
        """A client endpoint for this Redis.

        ``rediss://`` is checked against ``ca_file`` (PEM, one or more certificates) if
        given, else against the system's CAs; the host name (or IP address) of the URL must
        match the server's certificate.
        """
        if self.scheme == "unix":
            assert self.path is not None
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        assert self.host is not None and self.port is not None
        tcp = HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)
        if not self.tls:
            if ca_file is not None:
                raise ValueError("a Redis CA file needs a rediss:// URL")
            return tcp
        trust = None if ca_file is None else load_ca_file(ca_file, "Redis CA file")
        return wrapClientTLS(optionsForClientTLS(self.host, trustRoot=trust), tcp)


def _shown(url: str) -> str:
    """``url`` as an error message may show it: any password replaced by ``***``."""
    shown = re.sub(r"(://[^/?#@]*?:)[^/?#@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", shown)


def parse_redis_url(url: str) -> RedisURL:
    """Parse and check a Redis URL; :class:`ValueError` with a one-line message if bad.

    Accepted: ``redis://[[user]:password@]host[:port][/db]``, the same with ``rediss://``
    (TLS), and ``unix://[[user]:password@]path[?db=N]``. Every form also takes ``?db=N`` and
    ``?password=...``; user name and password are percent-decoded.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError as error:
        raise ValueError(f"bad Redis URL {_shown(url)!r}: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"bad Redis URL {_shown(url)!r}: it must start with redis://, rediss:// or unix://"
        )
    if parts.fragment:
        raise ValueError(f"bad Redis URL {_shown(url)!r}: no '#' part is allowed")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    db: int | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "db":
            db = _db_number(url, value)
        elif name == "password":
            password = value
        else:
            raise ValueError(f"bad Redis URL {_shown(url)!r}: unknown option {name!r}")
    password = password or None

    if scheme == "unix":
        _, _, location = parts.netloc.rpartition("@")
        path = location + parts.path
        if not path:
            raise ValueError(f"bad Redis URL {_shown(url)!r}: no socket path")
        return RedisURL("unix", path=path, db=db or 0, username=username, password=password)

    host = parts.hostname
    if not host:
        raise ValueError(f"bad Redis URL {_shown(url)!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad Redis URL {_shown(url)!r}: the port must be 1-65535") from None
    if port == 0:
        raise ValueError(f"bad Redis URL {_shown(url)!r}: the port must be 1-65535")
    path = parts.path.strip("/")
    if path:
        if db is not None:
            raise ValueError(f"bad Redis URL {_shown(url)!r}: the database is given twice")
        db = _db_number(url, path)
    return RedisURL(
        "rediss" if scheme == "rediss" else "redis",
        host=host,
        port=port or DEFAULT_PORT,
        db=db or 0,
        username=username,
        password=password,
    )


def _db_number(url: str, text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError(
            f"bad Redis URL {_shown(url)!r}: the database must be a number, not {text!r}"
        )
    return int(text)
