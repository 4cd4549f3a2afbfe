"""An evaluation set beside the sample world, and copies of some of its rows planted in the
training manifest: the faults the leakage check (``dataset_checks.leakage``) must find.

``generate_world(..., eval_set=N)`` writes ``eval/manifest.jsonl`` (N plain object records,
ids ``eval-00000`` ..., their own images under ``eval/media/``) and ``eval/leaks.tsv``, and
replaces :data:`LEAK_SHARE` of N clean plain object records of the training manifest (none of
them the source of a near-duplicate copy) by copies of distinct evaluation rows, each listed in
``faults.tsv`` with ``ERR_CROSS_MDL_DUPLICATE``:

- ``eval_image_copy``: the evaluation row's image cropped by 1-3 px a side, resized to 0.85-0.95
  and re-encoded as JPEG (as ``near_duplicate_image``), its content, captions and boxes (moved
  with the pixels): found by the image (``image_fingerprint`` cosine >= 0.98);
- ``eval_caption_copy``: the evaluation row's content and captions verbatim on a new photo of
  its scene (the same shapes placed elsewhere, every stated relation still true, the image
  fingerprint below :data:`DISTINCT_BELOW` to every image of both sets): found by the caption.

``eval/leaks.tsv`` names, for each planted row, the evaluation set (its manifest, relative to the
world) and the evaluation row it copies. Nothing else may match: an evaluation row shares no text
(markup, case, numbers and punctuation folded) with any training record or other evaluation row,
and its image fingerprint is below :data:`DISTINCT_BELOW` to every training and evaluation image,
so a correct check flags exactly the planted rows. Seeded by the world's seed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.world.dataset_faults import NEAR_DUPLICATE_IMAGE, near_duplicate_image
from pipeline.world.faults import FaultKind, PlannedRecord
from pipeline.world.objects import (
    EDGE_MARGIN_PX,
    SHAPE_GAP_PX,
    ObjectScene,
    _boxes_overlap,
    build_object_record,
    object_content,
    plan_object_scene,
    render_object_image,
    spatial_relations,
)
from schemas.reason_codes import ReasonCode

EVAL_DIR, EVAL_MANIFEST, LEAKS_NAME = "eval", "manifest.jsonl", "leaks.tsv"
EVAL_SET_PATH = f"{EVAL_DIR}/{EVAL_MANIFEST}"  # how leaks.tsv names the set
LEAK_SHARE = 0.25
DISTINCT_BELOW = 0.9  # thumbnail cosine; the leakage check's threshold is 0.95
THUMB_SIDE = 16  # image_fingerprint's default side
RESHOOT_TRIES = 2000


def _plain_object(record: PlannedRecord) -> bool:
    return isinstance(record.spec, ObjectScene) and not record.spec.laterality


EVAL_IMAGE_COPY = FaultKind("eval_image_copy", ReasonCode.DUPLICATE, "dataset", _plain_object)
EVAL_CAPTION_COPY = FaultKind("eval_caption_copy", ReasonCode.DUPLICATE, "dataset", _plain_object)
EVAL_FAULT_KINDS: tuple[FaultKind, ...] = (EVAL_IMAGE_COPY, EVAL_CAPTION_COPY)

_TAG_RE = re.compile(r"<[^<>]*>")
_NOT_LETTER_RE = re.compile(r"[^a-z]+")


def text_key(text: str) -> str:
    """A folding at least as coarse as the checks' ``normalise_caption`` (markup, case, numbers,
    punctuation and spaces dropped): texts with different keys never match there."""
    return _NOT_LETTER_RE.sub("", _TAG_RE.sub("", text).lower())


def record_keys(record: dict[str, Any]) -> set[str]:
    texts = [record.get("content"), *(record.get("captions") or [])]
    return {text_key(t) for t in texts if isinstance(t, str)} - {""}


def thumb(bgr: np.ndarray) -> np.ndarray:
    """The image as ``image_fingerprint`` sees it (16 x 16, area-resampled, each channel's mean
    subtracted, unit norm; channel order does not change a cosine)."""
    small = cv2.resize(bgr, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    flat = (small.reshape(-1, 3) - small.reshape(-1, 3).mean(axis=0)).reshape(-1)
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 1e-6 else flat


def _record_thumbs(records: Iterable[dict[str, Any]], root: Path) -> list[np.ndarray]:
    """Thumbnails of the records' first images that decode (faulty media are skipped)."""
    out = []
    for record in records:
        refs = record.get("media")
        ref = refs[0] if isinstance(refs, list) and refs and isinstance(refs[0], dict) else {}
        uri = ref.get("uri")
        if ref.get("modality") != "image" or not isinstance(uri, str) or ".." in uri:
            continue
        path = root / uri
        image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
        if image is not None:
            out.append(thumb(image))
    return out


class _Thumbs:
    """Thumbnails seen so far; ``distinct`` is True when a new one is below DISTINCT_BELOW to all."""

    def __init__(self, thumbs: Sequence[np.ndarray]) -> None:
        self.mat = np.stack(thumbs) if thumbs else np.zeros((0, 3 * THUMB_SIDE ** 2), np.float32)

    def distinct(self, t: np.ndarray) -> bool:
        return not self.mat.shape[0] or float((self.mat @ t).max()) < DISTINCT_BELOW

    def add(self, t: np.ndarray) -> None:
        self.mat = np.vstack([self.mat, t[None, :]])


def _relations(scene: ObjectScene) -> list[tuple[str, str, str]]:
    return [(r.subject.label, r.relation, r.reference.label) for r in spatial_relations(scene.shapes)]


def reshoot(scene: ObjectScene, record_id: str, thumbs: _Thumbs, rng: np.random.Generator
            ) -> ObjectScene | None:
    """``scene`` with its shapes placed anew, every relation its text states unchanged (so its
    content and captions stay true verbatim) and an image distinct from every one in ``thumbs``;
    None when no such placement was found."""
    wanted = _relations(scene)
    for _ in range(RESHOOT_TRIES):
        shapes: list[Any] = []
        for s in scene.shapes:
            lo = s.radius + EDGE_MARGIN_PX
            moved = replace(s, cx=int(rng.integers(lo, scene.width - lo)), cy=int(rng.integers(lo, scene.height - lo)))
            if any(_boxes_overlap(moved.box, p.box, SHAPE_GAP_PX) for p in shapes):
                break
            shapes.append(moved)
        if len(shapes) != len(scene.shapes):
            continue
        candidate = replace(scene, record_id=record_id, shapes=tuple(shapes))
        if (_relations(candidate) == wanted and object_content(candidate) == object_content(scene)
                and thumbs.distinct(thumb(render_object_image(candidate)))):
            return candidate
    return None


@dataclass(frozen=True)
class Leak:
    """A training record replaced by a copy of evaluation row ``eval_id``."""

    record_id: str
    fault: FaultKind
    eval_id: str


def plan_eval_scenes(n: int, records: Sequence[dict[str, Any]], root: Path, seed_rng: np.random.Generator
                     ) -> tuple[list[ObjectScene], _Thumbs]:
    """``n`` plain object scenes sharing no text with ``records`` or each other, their images
    distinct from ``records``' images and each other's (module docstring)."""
    used = set().union(*(record_keys(r) for r in records)) if records else set()
    thumbs = _Thumbs(_record_thumbs((r for r in records if r.get("kind") == "object"), root))
    scenes: list[ObjectScene] = []
    for _ in range(400 * n):
        if len(scenes) == n:
            break
        scene = plan_object_scene(f"eval-{len(scenes):05d}", seed_rng)
        if scene.laterality:
            continue
        keys = {text_key(t) for t in (object_content(scene), *scene.captions)}
        if keys & used:
            continue
        t = thumb(render_object_image(scene))
        if not thumbs.distinct(t):
            continue
        used |= keys
        thumbs.add(t)
        scenes.append(scene)
    if len(scenes) < n:
        raise ValueError(f"eval_set: found only {len(scenes)} of {n} evaluation scenes unlike every "
                         "training record (ask for fewer)")
    return scenes, thumbs


def write_eval_set(out_dir: Path, n: int, planned: Sequence[PlannedRecord], records: list[dict[str, Any]],
                   faults: dict[str, FaultKind], common: dict[str, object], scene_rng: np.random.Generator,
                   leak_rng: np.random.Generator) -> list[Leak]:
    """Write the evaluation set under ``out_dir/eval`` and plant its copies: ``records`` (the
    training records, in the order of ``planned``) are replaced in place; returns the leaks (add
    their faults to the world's)."""
    import json

    eval_dir = out_dir / EVAL_DIR
    (eval_dir / "media").mkdir(parents=True, exist_ok=True)
    scenes, thumbs = plan_eval_scenes(n, records, out_dir, scene_rng)
    eval_records = [build_object_record(scene, eval_dir, False, common) for scene in scenes]
    (eval_dir / EVAL_MANIFEST).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in eval_records), encoding="utf-8")

    sources = {p.spec.shapes for p in planned
               if faults.get(p.record_id) is NEAR_DUPLICATE_IMAGE and isinstance(p.spec, ObjectScene)}
    free = [i for i, p in enumerate(planned) if p.record_id not in faults and _plain_object(p)
            and isinstance(p.spec, ObjectScene) and p.spec.shapes not in sources]
    copies = min(int(round(n * LEAK_SHARE)), len(free))
    carriers = sorted(free[int(i)] for i in leak_rng.permutation(len(free))[:copies])
    copied = [int(i) for i in leak_rng.permutation(n)[:copies]]
    leaks: list[Leak] = []
    for k, (position, e) in enumerate(zip(carriers, copied, strict=True)):
        record_id, source = planned[position].record_id, scenes[e]
        # about half are caption copies: a scene that cannot be re-shot leaves its turn to the next
        wanted = (k + 1) // 2 > sum(x.fault is EVAL_CAPTION_COPY for x in leaks)
        copy = reshoot(source, record_id, thumbs, leak_rng) if wanted else None
        if copy is not None:
            records[position] = build_object_record(copy, out_dir, False, common)
            thumbs.add(thumb(render_object_image(copy)))
            fault = EVAL_CAPTION_COPY
        else:
            scene = replace(source, record_id=record_id)
            records[position] = build_object_record(scene, out_dir, False, common)
            near_duplicate_image(records[position], leak_rng, out_dir, scene)
            fault = EVAL_IMAGE_COPY
        leaks.append(Leak(record_id, fault, str(eval_records[e]["id"])))
    (eval_dir / LEAKS_NAME).write_text(
        "id\tfault\texpected_code\teval_set\teval_id\n" + "".join(
            f"{x.record_id}\t{x.fault.name}\t{x.fault.code.value}\t{EVAL_SET_PATH}\t{x.eval_id}\n" for x in leaks),
        encoding="utf-8")
    return leaks
