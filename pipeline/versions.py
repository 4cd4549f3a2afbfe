"""Version names and the ``latest`` pointer's rule.

A dated version (``YYYY-MM-DD``, as ``xmodal nightly`` builds them) moves ``latest`` only forward:
backfilling last Tuesday while Friday is published leaves ``latest`` on Friday. Any other name
(``demo``, ``v3``) moves ``latest`` to itself, as does a dated version when ``latest`` names an
undated one or nothing.
"""

from __future__ import annotations

import re

DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def moves_latest(current: str | None, version: str) -> bool:
    """Whether publishing ``version`` should point ``latest`` at it, ``latest`` now naming
    ``current`` (None or empty when there is no pointer)."""
    if not current or not DATED_VERSION.match(current) or not DATED_VERSION.match(version):
        return True
    return version >= current
