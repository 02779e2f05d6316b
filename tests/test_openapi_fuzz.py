"""schemathesis against /api/openapi.json: every documented route answers as documented."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from camproxy.sources.robocam.dialect import Limits
from camproxy.web.openapi import openapi_document
from tests.processes import BIN, free_port, get_json, running, twistd, wait_for_health

# The demo camera's limits (as its get_limits reports them), which the daemon serves.
schema = schemathesis.openapi.from_dict(openapi_document(Limits(0, 180, 0, 90)))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A demo daemon and a control token for it."""
    directory: Path = tmp_path_factory.mktemp("openapi")
    database = str(directory / "db.sqlite")

    def cli(*args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [str(BIN / "camproxy"), *args, "--database", database],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    cli("user", "add", "robot", "--password-stdin", stdin="robot-password\n")
    token = cli("token", "add", "robot", "fuzz", "--scope", "control").strip().splitlines()[-1]
    port = free_port()
    argv = twistd("--demo", "--listen", f"tcp:{port}:interface=127.0.0.1", "--database", database)
    with running(argv, cwd=directory) as daemon:
        wait_for_health(port, daemon)
        expected = openapi_document(Limits(0, 180, 0, 90))
        deadline = time.monotonic() + 10
        # The camera's limits arrive just after it connects; no event crosses processes.
        while get_json(f"http://127.0.0.1:{port}/api/openapi.json")[1] != expected:
            assert time.monotonic() < deadline, "the daemon never served the demo's limits"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", token


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, api: tuple[str, str]) -> None:
    base_url, token = api
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
