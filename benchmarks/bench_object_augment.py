"""Augmentation benchmark: ``object_augment`` images/s beside albumentations alone.

Inputs: ``--images`` PNG images (``--width`` x ``--height``, three filled boxes each) and their
object rows. Three measurements on the same images, same transforms (the stage defaults:
HorizontalFlip p=0.5, Affine p=0.5, RandomBrightnessContrast p=0.3) and same seeds, one core:

- the stage as the pipeline calls it (Arrow in and out, read + decode, transform, PNG encode,
  sha256, write, caption rewrite, transform record);
- albumentations alone in a plain loop doing the same pixel work (read + decode, transform,
  PNG encode, write): the reference for the ratio (target >= 0.9);
- albumentations on already decoded arrays (transform only), for context.

Run: ``python benchmarks/bench_object_augment.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import os

from benchmarks._result import report

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.run.ingest import parse_manifest_bytes  # noqa: E402
from stages.object_augment import (  # noqa: E402
    ObjectAugment,
    ObjectAugmentParams,
    build_compose,
    derive_seed,
)
from stages.object_boxes import ObjectBoxes  # noqa: E402


def make_images(root: Path, count: int, width: int, height: int) -> list[dict]:
    """Write ``count`` PNGs with three boxes each; return their object records."""
    rng = np.random.default_rng(0)
    records = []
    (root / "media").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((height, width, 3), 232, np.uint8)
        boxes = []
        for k, label in enumerate(("red circle", "blue square", "green triangle")):
            bw, bh = int(width * 0.2), int(height * 0.2)
            x1 = int(rng.integers(k * width // 3, (k + 1) * width // 3 - bw))
            y1 = int(rng.integers(0, height - bh))
            cv2.rectangle(image, (x1, y1), (x1 + bw, y1 + bh), (40 + 80 * k, 90, 200 - 60 * k), -1)
            boxes.append({"label": label, "bbox": [x1, y1, x1 + bw, y1 + bh],
                          "format": "pascal_voc"})
        cv2.imwrite(str(root / "media" / f"b{i}.png"), image)
        records.append({
            "id": f"b{i}", "kind": "object", "source": "bench", "license": "CC0-1.0",
            "content": "<|image_start|><|image_pad|><|image_end|> A <box>red circle</box> left of "
                       "a <box>blue square</box> and a <box>green triangle</box>.",
            "captions": ["The square is right of the circle."],
            "media": [{"modality": "image", "uri": f"media/b{i}.png", "width": width,
                       "height": height}],
            "boxes": boxes,
        })
    return records


def _rgb(bgr: np.ndarray | None, what: str) -> np.ndarray:
    """cv2.imread/imdecode's image as RGB; they return None for an unreadable image."""
    if bgr is None:
        raise ValueError(f"cannot decode image {what}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def albumentations_loop(records: list[dict], root: Path, out: Path, decode: bool) -> float:
    """The same pixel work in a plain loop; returns seconds. ``decode=False``: transform only."""
    p = ObjectAugmentParams(media_out=str(out))
    compose = build_compose(p.transforms, True, p.min_visibility, p.min_area, p.clip)
    arrays = [_rgb(cv2.imread(str(root / r["media"][0]["uri"])), r["media"][0]["uri"])
              for r in ([] if decode else records)]
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, r in enumerate(records):
        boxes = np.array([b["bbox"] for b in r["boxes"]], np.float64)
        if decode:
            data = (root / r["media"][0]["uri"]).read_bytes()
            rgb = _rgb(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), r["media"][0]["uri"])
        else:
            rgb = arrays[i]
        compose.set_random_seed(derive_seed(p.seed, r["id"], 0, 0))
        result = compose(image=rgb, bboxes=boxes, box_index=np.arange(len(boxes)))
        if decode:
            bgr = cv2.cvtColor(result["image"], cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, p.png_compression])
            (out / f"{r['id']}.png").write_bytes(buf.tobytes())
    return time.perf_counter() - start


def stage_run(records: list[dict], root: Path, out: Path) -> float:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    table = ObjectBoxes()(parse_manifest_bytes(data, str(root / "manifest.jsonl")))
    stage = ObjectAugment({"media_out": str(out)})
    stage.setup()
    start = time.perf_counter()
    result = stage(table)
    seconds = time.perf_counter() - start
    made = result.num_rows - table.num_rows
    if made != len(records):
        print(f"note: {len(records) - made} copies were dropped by min_visibility redraw limits")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40 images, one repeat")
    args = parser.parse_args(argv)
    count = 40 if args.quick else args.images
    repeats = 1 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="bench-augment-"))
    try:
        records = make_images(work, count, args.width, args.height)
        timings: dict[str, list[float]] = {"stage": [], "alone": [], "transform": []}
        for rep in range(repeats):  # interleaved, so that machine noise hits all three alike
            timings["alone"].append(albumentations_loop(records, work, work / f"a{rep}", True))
            timings["stage"].append(stage_run(records, work, work / f"s{rep}"))
            timings["transform"].append(albumentations_loop(records, work, work / "t", False))
        best = {k: min(v) for k, v in timings.items()}
        print(f"object_augment benchmark: {count} images {args.width}x{args.height}, 3 boxes "
              f"each, default transforms, 1 core (best of {repeats})")
        print(f"{'method':<48}{'seconds':>9}{'images/s':>10}{'ratio':>7}")
        rows = (("object_augment stage (pipeline call)", best["stage"]),
                ("albumentations alone (read, decode, encode, write)", best["alone"]),
                ("albumentations transform only (decoded arrays)", best["transform"]))
        for name, seconds in rows:
            print(f"{name:<48}{seconds:>9.3f}{count / seconds:>10.1f}"
                  f"{best['alone'] / seconds:>7.2f}")
        ratio = best["alone"] / best["stage"]
        report("object_augment", "augment images/s / albumentations alone images/s", ratio, ">= 0.9")
        print(f"stage / albumentations alone = {ratio:.2f} (target >= 0.9: "
              f"{'met' if ratio >= 0.9 else 'NOT met'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
