"""The synthetic sample world: a manifest of object, segment, document and text records with
their media, and a seeded share of faults whose expected reason codes are known.

``generate_world(out_dir, n, fault_rate, seed)`` writes under ``out_dir``:

- ``manifest.jsonl``: one record a line (format v1), kinds mixed, ``ensure_ascii=False``;
- ``media/``: PNG images, MP4 videos (mp4v, 10 fps), WAV audio (16 kHz mono) and ``.npy``
  per-frame features, referenced by relative URIs;
- ``faults.tsv``: ``id``, ``fault``, ``expected_code`` for every injected fault (clean records
  are not listed);
- ``world.json``: the summary (counts by kind, faults by code and by name, seed, n, rate);
- with ``eval_set=N``: ``eval/manifest.jsonl`` (N held-out object records, media in
  ``eval/media/``) and ``eval/leaks.tsv`` (the training records that copy one of them, and
  which; they are in ``faults.tsv`` too), :mod:`pipeline.world.eval_set`.

The same arguments give byte-identical files. Records that are not in ``faults.tsv`` are clean
under every rule of DESIGN.md.

May import: ``schemas``. Nothing of ``pipeline`` but itself.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.world.dataset_faults import DATASET_EDITS, plan_dataset_faults
from pipeline.world.documents import DocumentSpec, build_document_record, plan_document
from pipeline.world.eval_set import EVAL_DIR, EVAL_MANIFEST, LEAKS_NAME, write_eval_set
from pipeline.world.fault_edits import RECORD_EDITS
from pipeline.world.faults import (
    FAULT_KINDS,
    FaultKind,
    PlannedRecord,
    plan_faults,
    truncate_json_line,
)
from pipeline.world.objects import ObjectScene, build_object_record, plan_object_scene
from pipeline.world.segments import SegmentScene, build_segment_record, plan_segment_scene
from pipeline.world.texts import TextSpec, build_text_record, plan_text

__all__ = ["FAULT_KINDS", "WorldSummary", "generate_world"]

SOURCE = "xmodal-sample-world"
LICENSE = "CC0-1.0"
KIND_SHARES: dict[str, float] = {"object": 0.5, "segment": 0.2, "document": 0.2, "text": 0.1}
ID_PREFIX = {"object": "obj", "segment": "seg", "document": "doc", "text": "txt"}
MANIFEST_NAME, FAULTS_NAME, SUMMARY_NAME = "manifest.jsonl", "faults.tsv", "world.json"
# Distinct streams of the seed: kind order, each record's scene, fault choice, fault edits.
_KIND_STREAM, _SCENE_STREAM, _FAULT_STREAM, _EDIT_STREAM, _DATASET_STREAM = 1, 2, 3, 4, 5
_EVAL_STREAM, _LEAK_STREAM = 6, 7
COMMON: dict[str, object] = {"source": SOURCE, "license": LICENSE, "placeholder_version": "v1",
                             "review_status": "unreviewed"}


@dataclass(frozen=True)
class WorldSummary:
    """What ``generate_world`` wrote (also saved as ``world.json``)."""

    out_dir: Path
    n: int
    seed: int
    fault_rate: float
    counts_by_kind: dict[str, int]
    faults_by_code: dict[str, int]
    faults_by_name: dict[str, int] = field(default_factory=dict)
    eval_rows: int = 0  # records of the evaluation set beside the world (eval/manifest.jsonl)

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def faults_path(self) -> Path:
        return self.out_dir / FAULTS_NAME

    @property
    def eval_dir(self) -> Path:
        return self.out_dir / EVAL_DIR

    @property
    def eval_path(self) -> Path:
        return self.eval_dir / EVAL_MANIFEST

    @property
    def fault_count(self) -> int:
        return sum(self.faults_by_code.values())

    def __str__(self) -> str:
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.counts_by_kind.items())
        codes = ", ".join(f"{count} {code}" for code, count in self.faults_by_code.items())
        return (f"sample world (seed {self.seed}): {self.n} records ({kinds}) in "
                f"{self.manifest_path}; {self.fault_count} faults ({codes or 'none'}) listed in "
                f"{self.faults_path}" + (f"; an evaluation set of {self.eval_rows} records in "
                                          f"{self.eval_path} (copies planted: {self.eval_dir / LEAKS_NAME})"
                                          if self.eval_rows else ""))

    def to_json(self) -> dict[str, object]:
        """The ``world.json`` content (no absolute paths, so it is byte-identical per seed)."""
        out: dict[str, object] = {
            "seed": self.seed,
            "n": self.n,
            "fault_rate": self.fault_rate,
            "counts_by_kind": self.counts_by_kind,
            "faults_total": self.fault_count,
            "faults_by_code": self.faults_by_code,
            "faults_by_name": self.faults_by_name,
            "source": SOURCE,
            "license": LICENSE,
        }
        if self.eval_rows:  # worlds without an evaluation set keep their bytes
            out["eval_set"] = {"path": f"{EVAL_DIR}/{EVAL_MANIFEST}", "records": self.eval_rows,
                               "leaks": f"{EVAL_DIR}/{LEAKS_NAME}"}
        return out


def kind_counts(n: int) -> dict[str, int]:
    """How many records of each kind: shares of ``n``, at least one of each when ``n >= 4``,
    the remainder going to objects."""
    counts = {kind: int(n * share) for kind, share in KIND_SHARES.items()}
    if n >= len(KIND_SHARES):
        counts = {kind: max(1, count) for kind, count in counts.items()}
    counts["object"] += n - sum(counts.values())
    return counts


def plan_records(n: int, seed: int) -> list[PlannedRecord]:
    """Kinds in a seeded order, ids numbered per kind, one scene per record."""
    kinds = [kind for kind, count in kind_counts(n).items() for _ in range(count)]
    order = np.random.default_rng([seed, _KIND_STREAM]).permutation(len(kinds))
    numbers: Counter[str] = Counter()
    planned: list[PlannedRecord] = []
    for position, kind_index in enumerate(order):
        kind = kinds[int(kind_index)]
        record_id = f"{ID_PREFIX[kind]}-{numbers[kind]:05d}"
        numbers[kind] += 1
        rng = np.random.default_rng([seed, _SCENE_STREAM, position])
        spec: ObjectScene | SegmentScene | DocumentSpec | TextSpec
        if kind == "object":
            spec = plan_object_scene(record_id, rng)
        elif kind == "segment":
            spec = plan_segment_scene(record_id, rng)
        elif kind == "document":
            spec = plan_document(record_id, rng)
        else:
            spec = plan_text(record_id, rng)
        planned.append(PlannedRecord(record_id, kind, spec))
    return planned


def build_record(planned: PlannedRecord, fault: FaultKind | None, out_dir: Path
                 ) -> dict[str, object]:
    """Render one record's media and return its JSON-ready dict (render-time fault applied)."""
    common = dict(COMMON)
    fault_name = fault.name if fault is not None and fault.moment == "render" else None
    spec = planned.spec
    if isinstance(spec, ObjectScene):
        return build_object_record(spec, out_dir, fault_name == "mirrored_image_and_boxes", common)
    if isinstance(spec, SegmentScene):
        return build_segment_record(spec, out_dir, fault_name, common)
    if isinstance(spec, DocumentSpec):
        return build_document_record(spec, out_dir, common)
    return build_text_record(spec, common)


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``; replace a previous world there, refuse any other non-empty folder."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / SUMMARY_NAME).is_file():
            raise FileExistsError(f"{out_dir} is not empty and holds no sample world to replace")
        # A re-run must not leave the media of the previous world behind.
        shutil.rmtree(out_dir / "media", ignore_errors=True)
        shutil.rmtree(out_dir / EVAL_DIR, ignore_errors=True)
    (out_dir / "media").mkdir(parents=True, exist_ok=True)


def generate_world(
    out_dir: Path, n: int = 200, fault_rate: float = 0.1, seed: int = 0, dataset_faults: float = 0.0,
    eval_set: int = 0,
) -> WorldSummary:
    """Write a sample world of ``n`` records, about ``fault_rate`` of them faulty, under
    ``out_dir``, deterministically for ``seed``; about ``dataset_faults`` of them more carry a
    template caption or are near-duplicate copies (:mod:`pipeline.world.dataset_faults`); with
    ``eval_set`` N, an evaluation set of N records is written beside it and copies of some of
    its rows are planted in the manifest (:mod:`pipeline.world.eval_set`). Raises
    ``ValueError`` on bad arguments and ``FileExistsError`` when ``out_dir`` holds something
    other than a sample world."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= fault_rate <= 1.0:
        raise ValueError(f"fault_rate must be within [0, 1], got {fault_rate}")
    if not 0.0 <= dataset_faults <= 0.5:
        raise ValueError(f"dataset_faults must be within [0, 0.5], got {dataset_faults}")
    if eval_set < 0:
        raise ValueError(f"eval_set must be at least 0, got {eval_set}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    planned = plan_records(n, seed)
    faults = plan_faults(planned, fault_rate, np.random.default_rng([seed, _FAULT_STREAM]))
    if dataset_faults:
        planned, extra = plan_dataset_faults(planned, list(faults), dataset_faults,
                                             np.random.default_rng([seed, _DATASET_STREAM]))
        faults.update(extra)
    records: list[dict[str, object]] = []
    for position, record_plan in enumerate(planned):
        fault = faults.get(record_plan.record_id)
        record = build_record(record_plan, fault, out_dir)
        if fault is not None and fault.moment == "record":
            edit_rng = np.random.default_rng([seed, _EDIT_STREAM, position])
            RECORD_EDITS[fault.name](record, edit_rng, out_dir)
        elif fault is not None and fault.moment == "dataset" and isinstance(record_plan.spec, ObjectScene):
            edit_rng = np.random.default_rng([seed, _EDIT_STREAM, position])
            DATASET_EDITS[fault.name](record, edit_rng, out_dir, record_plan.spec)
        records.append(record)
    if eval_set:
        leaks = write_eval_set(out_dir, eval_set, planned, records, faults, COMMON,
                               np.random.default_rng([seed, _EVAL_STREAM]),
                               np.random.default_rng([seed, _LEAK_STREAM]))
        faults.update({leak.record_id: leak.fault for leak in leaks})
    lines: list[str] = []
    fault_rows: list[str] = []
    for record_plan, record in zip(planned, records, strict=True):
        fault = faults.get(record_plan.record_id)
        line = json.dumps(record, ensure_ascii=False)
        if fault is not None and fault.moment == "line":
            line = truncate_json_line(line)
        lines.append(line)
        if fault is not None:
            fault_rows.append(f"{record_plan.record_id}\t{fault.name}\t{fault.code.value}")
    (out_dir / MANIFEST_NAME).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    (out_dir / FAULTS_NAME).write_text(
        "id\tfault\texpected_code\n" + "".join(f"{row}\n" for row in fault_rows), encoding="utf-8")
    summary = WorldSummary(
        out_dir=out_dir,
        n=n,
        seed=seed,
        fault_rate=fault_rate,
        counts_by_kind=kind_counts(n),
        faults_by_code=dict(sorted(Counter(f.code.value for f in faults.values()).items())),
        faults_by_name=dict(sorted(Counter(f.name for f in faults.values()).items())),
        eval_rows=eval_set,
    )
    (out_dir / SUMMARY_NAME).write_text(
        json.dumps(summary.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
