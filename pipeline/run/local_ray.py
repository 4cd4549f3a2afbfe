"""Settings of a local Ray that ``xmodal run`` starts itself (no ``ray.address``, no
``RAY_ADDRESS``). Nothing here imports Ray: the runner applies them.

- Its files (sockets, logs, spilled objects) go to a temp dir of the run's own,
  ``$TMPDIR/xmodal-ray-XXXXXXXX``, unless ``ray.temp_dir`` says where: Ray's default,
  ``/tmp/ray``, is shared with every other Ray on the machine. The directory is kept after the
  run, like Ray's own, for its logs (Ray Data names it in "Full logs are in ...").
- Token authentication is on, as Ray 2.52+ does by default for a local cluster, but said
  explicitly (``RAY_AUTH_MODE=token``) so that Ray does not warn on every run about a default
  the user cannot act on. The token is the user's (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
  ``~/.ray/auth_token``), or else one made for this run and kept in this process's environment,
  which the local Ray's processes inherit: nothing is written to the home directory. A
  ``RAY_AUTH_MODE`` the user set is left alone. Ray reads its auth mode into its config at
  import, so the runner reloads that config after :func:`prepare_auth` changed it, as Ray does
  when it turns token auth on by itself.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger(__name__)

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# Ray's session directory holds Unix sockets, whose paths are limited to ~107 bytes.
_MAX_TEMP_ROOT = 40


def has_token(environ: MutableMapping[str, str], home: Path | None = None) -> bool:
    return any(environ.get(k) for k in TOKEN_SOURCES) or ((home or Path.home()) / ".ray" / "auth_token").is_file()


def prepare_auth(environ: MutableMapping[str, str], home: Path | None = None) -> bool:
    """Make token auth explicit in ``environ`` for a local Ray about to start; returns whether
    anything was set (nothing is when the mode is set already)."""
    if environ.get(AUTH_MODE):
        return False
    environ[AUTH_MODE] = "token"
    if not has_token(environ, home):
        environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # this run's own; never printed or written
        log.info("local Ray: token auth with a token made for this run")
    return True


def run_temp_dir(configured: str | None) -> str:
    """``ray.temp_dir`` when set, else a new directory of this run's own under the temp dir
    (``/tmp`` when that path is too long for Ray's sockets)."""
    if configured:
        return configured
    root = tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="xmodal-ray-", dir=root if len(root) <= _MAX_TEMP_ROOT else "/tmp")
    log.info("local Ray: its files are in %s", path)
    return path
