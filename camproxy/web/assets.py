"""Where the templates and static files are: installed in the package, or in a checkout."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def asset_directory(name: str) -> Path:
    """``templates`` or ``static``: ``camproxy/<name>`` when installed from a wheel,
    else the repository's top-level directory (a source checkout or editable install)."""
    installed = Path(str(files("camproxy"))) / name
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / name
