"""``xmodal nightly CONFIG [--date D]``: build the dated version of a dataset, once.

- Idempotent: a version whose ``manifest.json`` exists is skipped (exit 0).
- Resumable: the build runs ``pipeline.run.run_config`` inside
  :func:`pipeline.run.checkpoints.stage_checkpoints`, so each stage's output is kept under
  ``<root>/<dataset>/.build-<version>/stages/`` and a killed build continues after the last
  completed stage. The build directory is removed once the release is committed.
- Locked: :func:`pipeline.cluster.locks.version_lock`; a second scheduler exits 75 (EX_TEMPFAIL).
- Retention: after a successful build, only the newest ``--keep`` dated versions stay; the one
  just built and the one ``latest`` names are never removed, nor undated versions (``demo``).
- A failed build leaves ``.build-<version>/failure.json`` (what failed, when, which steps are
  checkpointed) beside its checkpoints, publishes nothing and leaves ``latest`` where it was.

Same inputs, config, code and date give byte-identical shards (the release sorts rows and
encodes deterministically), so a resumed build equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

import pyarrow.fs as pafs

from access.io import filesystem_for, read_bytes, write_bytes
from pipeline.release.versions import DATED_VERSION, read_latest
from pipeline.release.writer import release_exists, remove_tree
from pipeline.run.config import RunConfig

log = logging.getLogger(__name__)

EXIT_LOCKED = 75  # EX_TEMPFAIL: another build of this version is running; try again later
EXIT_TERMINATED = 143
FAILURE_RECORD = "failure.json"


class BuildTerminated(Exception):
    """SIGTERM (systemd stop, ``ray job stop``, a pod eviction) arrived during a build."""


@dataclass
class NightlyResult:
    """What one ``xmodal nightly`` did."""

    version: str
    uri: str
    state: Literal["built", "skipped"]
    manifest: dict[str, Any]
    removed: list[str] = field(default_factory=list)


def today_utc() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def parse_date(text: str) -> str:
    """``YYYY-MM-DD`` -> the version name; anything else is an argparse error."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def dataset_uri(root: str, dataset: str) -> str:
    return f"{root.rstrip('/')}/{dataset}"


def build_dir_uri(root: str, dataset: str, version: str) -> str:
    return f"{dataset_uri(root, dataset)}/.build-{version}"


def _read_manifest(release_uri: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(read_bytes(f"{release_uri}/manifest.json"))
    return loaded


def checkpointed_steps(build_uri: str) -> list[str]:
    """Names (``NN-stage-key``) of the steps whose output is complete under a build directory."""
    from pipeline.run.checkpoints import DONE_MARKER

    fs, path = filesystem_for(f"{build_uri}/stages")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(i.path.split("/")[-2] for i in infos if i.is_file and i.path.endswith(f"/{DONE_MARKER}"))


def dated_versions(root: str, dataset: str) -> list[str]:
    """Published (manifest present) versions of a dataset whose name is a date, oldest first."""
    fs, base = filesystem_for(dataset_uri(root, dataset))
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and DATED_VERSION.match(i.base_name))
    return [n for n in names if release_exists(root, dataset, n)]


def apply_retention(root: str, dataset: str, keep: int, protect: set[str]) -> list[str]:
    """Remove all but the newest ``keep`` dated versions; never one in ``protect`` nor the one
    ``latest`` names. Returns the removed versions. ``keep=0`` keeps everything."""
    if keep <= 0:
        return []
    base = dataset_uri(root, dataset)
    latest = read_latest(base)
    removed = []
    for version in dated_versions(root, dataset)[:-keep]:
        if version in protect or version == latest:
            continue
        fs, path = filesystem_for(f"{base}/{version}/manifest.json")
        # manifest.json first: a removal cut short must not leave something that looks published.
        fs.delete_file(path)
        remove_tree(f"{base}/{version}")
        removed.append(version)
    return removed


def _record_failure(build_uri: str, version: str, err: BaseException, started: float) -> None:
    record = {
        "version": version,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
        "failed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "error": f"{type(err).__name__}: {err}",
        "checkpointed_steps": checkpointed_steps(build_uri),
    }
    try:
        write_bytes(f"{build_uri}/{FAILURE_RECORD}", json.dumps(record, indent=2).encode() + b"\n")
    except OSError as io_err:  # the storage itself may be what failed; the exit code still tells
        log.error("could not write %s/%s: %s", build_uri, FAILURE_RECORD, io_err)


def build_nightly(cfg: RunConfig, version: str, keep: int = 7) -> NightlyResult:
    """Build ``version`` of ``cfg.dataset`` unless it is published; see the module docstring.
    Raises ``LockHeld``, ``ReleaseError``, ``ConfigError`` or whatever the run raised."""
    from pipeline.build import run_config
    from pipeline.cluster.locks import version_lock
    from pipeline.run.checkpoints import stage_checkpoints

    # Nightly versions are never overwritten: a published night is final.
    cfg = cfg.model_copy(update={"version": version, "release": cfg.release.model_copy(update={"overwrite": False})})
    root, dataset = cfg.release.output, cfg.dataset
    release_uri = f"{dataset_uri(root, dataset)}/{version}"
    if release_exists(root, dataset, version):
        return NightlyResult(version, release_uri, "skipped", _read_manifest(release_uri))
    with version_lock(root, dataset, version):
        if release_exists(root, dataset, version):  # published by the holder we waited behind
            return NightlyResult(version, release_uri, "skipped", _read_manifest(release_uri))
        build_uri = build_dir_uri(root, dataset, version)
        started = time.time()
        try:
            with stage_checkpoints(build_uri):
                result = run_config(cfg)
        except BaseException as err:
            _record_failure(build_uri, version, err, started)
            raise
        remove_tree(build_uri)
        removed = apply_retention(root, dataset, keep, protect={version})
    return NightlyResult(version, result.uri, "built", result.manifest, removed)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise BuildTerminated(f"terminated by signal {signum}")


def cmd_nightly(args: argparse.Namespace) -> int:
    from pipeline.cluster.locks import LockHeld
    from pipeline.run.config import load_config

    cfg = load_config(args.config)
    version = args.date or today_utc()
    # SIGTERM becomes an exception so that the failure record is written before exiting.
    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = build_nightly(cfg, version, keep=args.keep)
    except LockHeld as err:
        print(f"xmodal nightly: {cfg.dataset} {version} is being built elsewhere: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except BuildTerminated as err:
        print(f"xmodal nightly: {cfg.dataset} {version}: {err}; the next run resumes", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    counts = result.manifest["counts"]
    if result.state == "skipped":
        print(f"skipped: {result.uri} is already published (manifest.json exists)")
    else:
        print(f"built: {result.uri}")
    print(f"input {counts['input_records']} = kept {counts['kept']} + rejected {counts['rejected']}")
    for removed in result.removed:
        print(f"retention: removed {dataset_uri(cfg.release.output, cfg.dataset)}/{removed}")
    return 0


def register_cli(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "nightly",
        "build the dated version of a dataset once: skip it when published, resume a killed build, "
        "lock against a second scheduler (exit 75), keep the newest --keep versions",
        cmd_nightly,
        "xmodal nightly configs/demo.yaml --date 2026-11-21 --keep 7",
    )
    p.add_argument("config", help="YAML config; its version is replaced by the date")
    p.add_argument("--date", type=parse_date, help="version to build, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--keep", type=int, default=7,
                   help="dated versions to keep after a successful build; 0 keeps all (default 7)")
