"""Running ``camproxy`` commands in a subprocess, as a user would, and reading the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import attrs

REPOSITORY = Path(__file__).resolve().parent.parent


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a refusal prints (``camproxy COMMAND: …``); exactly one, or the
        test fails."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("camproxy ")
        return lines[0]


def camproxy(
    cwd: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    detached: bool = False,
) -> Result:
    """Run ``camproxy ARGS`` (``python -m camproxy.cli``) in ``cwd``, without DATABASE_URL.

    ``detached`` runs it without a controlling terminal, so getpass reads standard input.
    """
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), *filter(None, [environ.get("PYTHONPATH")])]
    )
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "camproxy.cli", *args],
        cwd=cwd,
        env=environ,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=detached,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
