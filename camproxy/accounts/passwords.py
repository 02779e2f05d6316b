"""Password hashing with bcrypt off the reactor thread, and the rules for new passwords.

bcrypt reads at most 72 bytes of a password; bcrypt 5 raises for longer ones where
older versions silently ignored the rest. CamProxy therefore refuses *new* passwords
over 72 UTF-8 bytes (``check_new_password`` raises ``BadPassword``), and at login a
longer password simply does not match (``verify`` gives False, never an exception).
Any non-empty password is accepted: who runs a lab camera decides how strong its
passwords must be (the admin page recommends 8 characters or more).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Final

import attrs
import bcrypt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from zope.interface import Interface, implementer

#: Recommended, not enforced: the operator of a lab camera decides (see README).
RECOMMENDED_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_BYTES: Final = 72
DEFAULT_ROUNDS: Final = 12


class BadPassword(ValueError):
    """A new password breaks the rules; the message is one line, fit for a user."""


def _encode(password: str) -> bytes | None:
    """The bytes bcrypt sees, or None when bcrypt cannot take ``password`` at all."""
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if not secret or len(secret) > MAX_PASSWORD_BYTES:
        return None
    return secret


def check_new_password(password: str) -> None:
    """Raise ``BadPassword`` unless ``password`` may be set as a new password."""
    if not password:
        raise BadPassword("the password must not be empty")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadPassword("the password is not valid Unicode text") from None
    if size > MAX_PASSWORD_BYTES:
        raise BadPassword(
            f"the password must be at most {MAX_PASSWORD_BYTES} bytes long in UTF-8 "
            f"(this one has {size}); bcrypt ignores anything longer"
        )


class IPasswordHasher(Interface):
    """Turns passwords into stored hashes and checks them, without blocking the reactor."""

    def hash(password: str) -> Deferred[str]:
        """A new salted hash of ``password``.

        Fails with ``BadPassword`` for an empty password or one over 72 UTF-8 bytes; the
        other rules for new passwords are ``check_new_password``'s.
        """

    def verify(password: str, hashed: str) -> Deferred[bool]:
        """Whether ``password`` matches ``hashed``.

        Never fails: an empty or over-long password, or a malformed hash, is False.
        """

    def hash_now(password: str) -> str:
        """``hash``, blocking the calling thread: for the daemon's start, before the
        reactor runs (nothing is served then, so nothing waits). ``BadPassword`` as
        ``hash``.
        """


def _bcrypt_hash(secret: bytes, rounds: int) -> str:
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds)).decode("ascii")


def _bcrypt_check(secret: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, hashed)
    except ValueError:
        return False


def _check_rounds(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 4 <= value <= 31:
        raise ValueError(f"bcrypt rounds must be between 4 and 31, not {value}")


@implementer(IPasswordHasher)
@attrs.frozen
class BcryptHasher:
    """bcrypt (``$2b$``, the Flask version's format) in the reactor's thread pool.

    :param reactor: provides ``getThreadPool`` and ``callFromThread``.
    :param rounds: the cost; 12 (about a quarter second) for real use, 4 in tests.
    """

    reactor: Any
    rounds: int = attrs.field(default=DEFAULT_ROUNDS, validator=_check_rounds)

    def hash(self, password: str) -> Deferred[str]:
        """See ``IPasswordHasher.hash``."""
        secret = _encode(password)
        if secret is None:
            return fail(BadPassword("the password must be 1 to 72 bytes long in UTF-8"))
        pool = self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, _bcrypt_hash, secret, self.rounds)

    def hash_now(self, password: str) -> str:
        """See ``IPasswordHasher.hash_now``."""
        secret = _encode(password)
        if secret is None:
            raise BadPassword("the password must be 1 to 72 bytes long in UTF-8")
        return _bcrypt_hash(secret, self.rounds)

    def verify(self, password: str, hashed: str) -> Deferred[bool]:
        """See ``IPasswordHasher.verify``."""
        secret = _encode(password)
        if secret is None or not hashed.isascii():
            return succeed(False)
        pool = self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, _bcrypt_check, secret, hashed.encode())


@implementer(IPasswordHasher)
@attrs.frozen
class FastHasher:
    """A fake for tests: salted SHA-256 at once, with ``BcryptHasher``'s rules.

    Its hashes (``fake$SALT$DIGEST``) are not bcrypt and never match a real one.
    """

    def hash(self, password: str) -> Deferred[str]:
        """See ``IPasswordHasher.hash``."""
        try:
            return succeed(self.hash_now(password))
        except BadPassword as problem:
            return fail(problem)

    def hash_now(self, password: str) -> str:
        """See ``IPasswordHasher.hash_now``."""
        secret = _encode(password)
        if secret is None:
            raise BadPassword("the password must be 1 to 72 bytes long in UTF-8")
        salt = secrets.token_hex(8)
        return f"fake${salt}${hashlib.sha256(salt.encode() + secret).hexdigest()}"

    def verify(self, password: str, hashed: str) -> Deferred[bool]:
        """See ``IPasswordHasher.verify``."""
        secret = _encode(password)
        parts = hashed.split("$")
        if secret is None or len(parts) != 3 or parts[0] != "fake":
            return succeed(False)
        digest = hashlib.sha256(parts[1].encode() + secret).hexdigest()
        return succeed(hmac.compare_digest(digest, parts[2]))
