"""The certificates a TLS connection to a camera or to Redis is checked against.

A PEM file is read once, when the daemon is built (never on the reactor thread while it
runs), into a trust root; None stands for the system's CAs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.internet.ssl import Certificate, trustRootFromCertificates

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def load_ca_file(path: str | Path, what: str = "CA file") -> IOpenSSLTrustRoot:
    """A trust root made of every certificate in the PEM file ``path``; ValueError with a
    one-line message (naming it as ``what``) if it cannot be used."""
    try:
        pem = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the {what} {path}: {error.strerror}") from None
    blocks = _PEM_CERTIFICATE.findall(pem)
    if not blocks:
        raise ValueError(f"the {what} {path} holds no PEM certificate")
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except Exception:
        raise ValueError(f"the {what} {path} holds an unreadable certificate") from None
    return trustRootFromCertificates(certificates)
