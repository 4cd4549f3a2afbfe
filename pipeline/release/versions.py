"""Version names and the ``latest`` pointer's rule.

A dated version (``YYYY-MM-DD``, as ``xmodal nightly`` builds them) moves ``latest`` only forward:
backfilling last Tuesday while Friday is published leaves ``latest`` on Friday. Any other name
(``demo``, ``v3``) moves ``latest`` to itself, as does a dated version when ``latest`` names an
undated one or nothing.
"""

from __future__ import annotations

import re

from access.io import read_bytes

DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
LATEST = "latest"


def read_latest(dataset_uri: str) -> str | None:
    """The version ``<dataset_uri>/latest`` names (a local path or any URI ``access.io``
    reads), or None when there is no pointer."""
    try:
        return read_bytes(f"{dataset_uri.rstrip('/')}/{LATEST}").decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None


def moves_latest(current: str | None, version: str) -> bool:
    """Whether publishing ``version`` should point ``latest`` at it, ``latest`` now naming
    ``current`` (None or empty when there is no pointer)."""
    if not current or not DATED_VERSION.match(current) or not DATED_VERSION.match(version):
        return True
    return version >= current
