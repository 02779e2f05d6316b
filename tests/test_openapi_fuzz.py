"""schemathesis against /api/openapi.json: every documented route answers as documented."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from camproxy.openapi import openapi_document
from tests.processes import BIN, free_port, running, twistd, wait_for_health

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A demo daemon and a control token for it."""
    directory: Path = tmp_path_factory.mktemp("openapi")
    database = str(directory / "db.sqlite")

    def cli(*args: str, stdin: str = "") -> str:
        result = subprocess.run(  # noqa: S603
            [str(BIN / "camproxy"), *args, "--database", database],
            input=stdin, capture_output=True, text=True, check=True,
        )
        return result.stdout

    cli("user", "add", "robot", "--password-stdin", stdin="robot-password\n")
    token = cli("token", "add", "robot", "fuzz", "--scope", "control").strip().splitlines()[-1]
    port = free_port()
    argv = twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database)
    with running(argv, cwd=directory) as daemon:
        wait_for_health(port, daemon)
        yield f"http://127.0.0.1:{port}", token


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, api: tuple[str, str]) -> None:
    base_url, token = api
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
