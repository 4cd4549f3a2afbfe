"""Where a model's weights come from and how they are pinned: a checkpoint URI -> a verified
local path. Loading the weights is :mod:`access.models`'s business.

A checkpoint is named by a URI:

- a local directory (or weights file), relative to the current directory;
- ``s3://bucket/prefix``: a directory of objects, copied once per node into the model cache
  (``$XMODAL_MODEL_CACHE``, default ``~/.cache/xmodal/models``) under a file lock, into a
  temporary directory that is renamed into place, so no reader ever sees half a copy;
- ``hf:org/name`` or ``hf:org/name@revision``: a snapshot already in the Hugging Face cache
  (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``), resolved by ``huggingface_hub`` with
  ``local_files_only=True``.

Nothing is fetched from a hub. ``sha256`` pins the weights file (what ``sha256sum`` prints for
``open_clip_model.safetensors`` or ``model.safetensors``); a missing checkpoint or a mismatch
raises :class:`CheckpointError` when a stage's parameters are validated, that is when the config
is loaded, before any data is read.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SHA256_PATTERN = r"^[0-9a-f]{64}$"
WEIGHT_NAMES = (
    "open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "pytorch_model.bin", "model.pth",
)
_HF_RE = re.compile(r"^hf:(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)(?:@(?P<rev>[A-Za-z0-9_.-]+))?$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, incomplete, or not the pinned one."""


def model_cache_dir() -> Path:
    return Path(os.environ.get("XMODAL_MODEL_CACHE") or Path.home() / ".cache" / "xmodal" / "models")


def weights_file(path: Path) -> Path:
    """The weights file of a checkpoint directory (or ``path`` itself when it is a file)."""
    if path.is_file():
        return path
    for name in WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    raise CheckpointError(f"checkpoint {path}: no weights file (looked for {', '.join(WEIGHT_NAMES)})")


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so that actors hash once."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


def verify_sha256(path: Path, expected: str | None, uri: str) -> None:
    if expected is None:
        return
    got = file_sha256(weights_file(path))
    if got != expected:
        raise CheckpointError(
            f"checkpoint {uri}: sha256 of {weights_file(path).name} is {got}, expected {expected}")


# ---- sources --------------------------------------------------------------------------------
def hf_cache_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def hf_snapshot(repo: str, revision: str | None = None) -> Path:
    """The local snapshot of ``repo`` at ``revision`` (a branch, tag or commit; default
    ``main``) in the Hugging Face cache, resolved by ``huggingface_hub`` itself with
    ``local_files_only=True``: the network is never touched, and the cache layout is the
    library's business, not ours."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    ref = revision or "main"
    try:
        path = snapshot_download(repo, revision=ref, cache_dir=hf_cache_root(), local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise CheckpointError(
            f"hf:{repo}@{ref} is not in the Hugging Face cache {hf_cache_root()} (nothing is "
            "downloaded at run time: populate the cache first, e.g. with `hf download`)") from None
    return Path(str(path))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _s3_listing(uri: str) -> list[tuple[str, int]]:
    import pyarrow.fs as pafs

    from access.io import filesystem_for

    fs, prefix = filesystem_for(uri.rstrip("/"))
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    files = [(i.path[len(prefix):].lstrip("/"), int(i.size or 0)) for i in infos
             if i.type == pafs.FileType.File]
    if not files:
        raise CheckpointError(f"checkpoint {uri}: no objects under this prefix (an s3:// "
                              "checkpoint is a directory: config and weights)")
    return sorted(files)


def posix_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def copy_s3_checkpoint(uri: str, sha256: str | None) -> Path:
    """Copy the objects under ``uri`` into the node's model cache once; return the local copy.

    The cache entry is named after the URI and the pin (or, unpinned, the listing's names and
    sizes), so a changed object is a new entry. Concurrent actors on one node wait on a lock;
    the copy goes to a temporary directory that is renamed into place when complete."""
    from access.io import read_bytes

    listing = _s3_listing(uri)
    pin = sha256 or hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    key = hashlib.sha256(f"{uri.rstrip('/')}\n{pin}".encode()).hexdigest()[:24]
    cache = model_cache_dir()
    dest = cache / f"{posix_name(uri.rstrip('/'))}-{key}"
    if dest.is_dir():
        return dest
    with _locked(cache / f".{dest.name}.lock"):
        if dest.is_dir():  # another actor on this node finished the copy while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=cache))
        try:
            for rel, _ in listing:
                src = f"{uri.rstrip('/')}/{rel}"
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read_bytes(src))
            verify_sha256(tmp, sha256, uri)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("copied checkpoint %s to %s", uri, dest)
    return dest


def resolve_checkpoint(uri: str, sha256: str | None = None) -> Path:
    """A local path holding the checkpoint named by ``uri``, verified against ``sha256``.

    Raises :class:`CheckpointError` when it is missing or does not match."""
    match = _HF_RE.match(uri)
    if match:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = hf_snapshot(match["repo"], match["rev"])
    elif uri.startswith("s3://"):
        try:
            path = copy_s3_checkpoint(uri, sha256)
        except (OSError, FileNotFoundError) as exc:
            raise CheckpointError(f"checkpoint {uri}: cannot copy from S3: {exc}") from None
    elif "://" in uri and not uri.startswith("file://"):
        raise CheckpointError(f"checkpoint {uri}: use a path, s3://bucket/prefix or hf:org/name")
    else:
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        if not path.exists():
            raise CheckpointError(f"checkpoint {uri} not found (resolved to {path})")
    verify_sha256(path, sha256, uri)
    return path
