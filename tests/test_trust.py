"""CA files for cameras and Redis: read once at start, with a one-line error if unusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from camproxy.config import Config
from camproxy.tap import camera_trust_root
from camproxy.trust import load_ca_file
from tests.certs import make_self_signed


def test_a_ca_file_is_read_into_a_trust_root(tmp_path: Path) -> None:
    files = make_self_signed(tmp_path)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(
        files.cert.read_bytes() + make_self_signed(tmp_path, "other").cert.read_bytes()
    )
    assert load_ca_file(files.cert) is not None
    assert load_ca_file(bundle) is not None
    assert camera_trust_root(Config()) is None  # the system's CAs


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the camera CA file"),
        (b"", "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "unreadable"),
    ],
)
def test_an_unusable_camera_ca_file_stops_the_start_with_one_line(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as stopped:
        camera_trust_root(Config(camera_ca=str(path)))
    message = str(stopped.value)
    assert message.startswith("camproxy: error: ") and problem in message
    assert "\n" not in message
