"""Secrets stored as their hashes: session ids and API tokens.

Both go to their owner once (a cookie, a token printed once) and the database keeps only
their SHA-256, so a copy of the database yields nothing usable. Both stores look rows up
by that hash, refuse implausible input before hashing it, and check many at once in
batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Values per ``IN (...)``: SQLite allows 999 parameters a statement before 3.32.
BATCH: Final = 500


def hashed(secret: str) -> str:
    """The stored form of a secret: SHA-256, hex. Any string hashes, even a lone surrogate."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def plausible(secret: object, *, max_chars: int, prefix: str = "") -> bool:
    """Whether ``secret`` could be one of ours: a non-empty string with ``prefix``, not
    longer than ``max_chars`` (far longer input is refused before any work)."""
    return isinstance(secret, str) and 0 < len(secret) <= max_chars and secret.startswith(prefix)


#: The parameter of a :func:`present` query: ``column.in_(sa.bindparam(VALUES, expanding=True))``.
VALUES: Final = "values"


def among(column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """The condition a :func:`present` query needs: ``column`` in the values given."""
    return column.in_(sa.bindparam(VALUES, expanding=True))


def present(
    connection: Connection,
    query: sa.Select[Any],
    values: Sequence[str],
    **parameters: Any,
) -> set[str]:
    """Which of ``values`` the ``query`` finds, in batches.

    ``query`` selects one column and has ``among(that column)`` among its conditions;
    ``parameters`` are its other bind parameters. Built once, it is compiled once.
    """
    found: set[str] = set()
    for start in range(0, len(values), BATCH):
        batch = values[start : start + BATCH]
        found.update(connection.scalars(query, {VALUES: batch, **parameters}))
    return found
