"""Box validation benchmark: boxes validated per second on one core.

Inputs: a ROW_SCHEMA batch of object rows (``--boxes-per-row`` boxes each, the four formats
mixed, 2% of the boxes broken: outside, inverted, zero-area, NaN) built directly as Arrow
arrays. Measures the ``object_boxes`` stage called as the pipeline calls it (ok/rest split,
schema conform, ``boxes_xyxy`` output, reject columns), its numpy core alone, and a plain
per-box Python loop over ``to_pylist()`` rows (what a non-vectorised stage would do), and prints
boxes/s and the ratio of the stage to the loop. Target: at least 1 million boxes/s per core.

Run: ``python benchmarks/bench_object_boxes.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import os

from benchmarks._result import report

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.records import BOX_TYPE, MEDIA_TYPE, ROW_SCHEMA  # noqa: E402
from stages.base import conform  # noqa: E402
from stages.object_boxes import FORMATS, ObjectBoxes, box_problems, from_xyxy  # noqa: E402

LABELS = ["red circle", "blue square", "green triangle", "yellow star", "person", "dog"]


def make_batch(rows: int, per_row: int, seed: int = 0
               ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``rows`` object rows of ``per_row`` boxes on 256x192 images, 2% of the boxes broken;
    also returns the raw coordinates and format indices (for timing the numpy core alone)."""
    rng = np.random.default_rng(seed)
    n = rows * per_row
    w = np.full(n, 256.0)
    h = np.full(n, 192.0)
    x1, y1 = rng.uniform(0, 200, n), rng.uniform(0, 140, n)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(4, 56, n), y1 + rng.uniform(4, 52, n)], axis=1)
    fmt = rng.integers(0, 4, n)
    coords = from_xyxy(xyxy, fmt, w, h)
    broken = rng.random(n) < 0.02
    kind = rng.integers(0, 4, n)
    coords[broken & (kind == 0), 2] = 10_000.0  # far outside in every format
    swap = broken & (kind == 1)
    coords[swap, 0], coords[swap, 2] = coords[swap, 2] + 1, coords[swap, 0]
    coords[broken & (kind == 2), 3] = -1.0  # negative height (or inverted y)
    coords[broken & (kind == 3), 1] = math.nan
    bbox = pa.ListArray.from_arrays(np.arange(0, 4 * n + 1, 4, dtype=np.int32),
                                    pa.array(coords.reshape(-1)))
    labels = pa.array(np.array(LABELS, dtype=object)[rng.integers(0, len(LABELS), n)], pa.string())
    formats = pa.array(np.array(FORMATS, dtype=object)[fmt], pa.string())
    box_struct = pa.StructArray.from_arrays([labels, bbox, formats], fields=list(BOX_TYPE))
    boxes = pa.ListArray.from_arrays(np.arange(0, n + 1, per_row, dtype=np.int32), box_struct)
    media_struct = pa.StructArray.from_arrays(
        [pa.array(["image"] * rows), pa.array([f"media/{i}.png" for i in range(rows)]),
         pa.nulls(rows, pa.string()), pa.array(np.full(rows, 256, np.int32)),
         pa.array(np.full(rows, 192, np.int32))]
        + [pa.nulls(rows, f.type) for f in list(MEDIA_TYPE)[5:]],
        fields=list(MEDIA_TYPE))
    media = pa.ListArray.from_arrays(np.arange(rows + 1, dtype=np.int32), media_struct)
    table = pa.table({
        "id": pa.array([f"o{i}" for i in range(rows)]), "kind": pa.array(["object"] * rows),
        "media": media, "boxes": boxes, "status": pa.array(["ok"] * rows),
    })
    return conform(table, ROW_SCHEMA), coords, fmt


def python_loop(table: pa.Table) -> int:
    """Per-box Python validation of the same rules (the non-vectorised baseline)."""
    bad_rows = 0
    for row in table.select(["media", "boxes"]).to_pylist():
        w, h = row["media"][0]["width"], row["media"][0]["height"]
        for box in row["boxes"]:
            a, b, c, d = box["bbox"]
            f = box["format"]
            if f == "coco":
                a, b, c, d = a, b, a + c, b + d
            elif f == "yolo":
                a, b, c, d = (a - c / 2) * w, (b - d / 2) * h, (a + c / 2) * w, (b + d / 2) * h
            elif f == "albumentations":
                a, b, c, d = a * w, b * h, c * w, d * h
            if (not all(map(math.isfinite, (a, b, c, d))) or a > c or b > d or c - a < 1
                    or d - b < 1 or a < -1 or b < -1 or c > w + 1 or d > h + 1):
                bad_rows += 1
                break
    return bad_rows


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=125_000)
    parser.add_argument("--boxes-per-row", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10x fewer rows, one repeat")
    args = parser.parse_args(argv)
    rows = args.rows // 10 if args.quick else args.rows
    repeats = 1 if args.quick else args.repeats
    table, coords, fmt = make_batch(rows, args.boxes_per_row)
    n = rows * args.boxes_per_row
    stage = ObjectBoxes()
    out = stage(table)
    rejected = int((np.asarray(out["status"].to_pylist()) == "rejected").sum())

    width, height = np.full(n, 256), np.full(n, 192)
    t_stage = best_of(repeats, lambda: stage(table))
    t_core = best_of(repeats, lambda: box_problems(coords, fmt, width, height, 1.0, 1.0))
    loop_rows = max(1, rows // 10)
    loop_table = table.slice(0, loop_rows)
    t_loop = best_of(1, lambda: python_loop(loop_table)) * (rows / loop_rows)
    assert_same = python_loop(table.slice(0, loop_rows)) == int(
        (np.asarray(out["status"].to_pylist()[:loop_rows]) == "rejected").sum())

    print(f"object_boxes benchmark: {rows} rows x {args.boxes_per_row} boxes = {n} boxes, "
          f"{rejected} rows rejected, 1 core (best of {repeats})")
    print(f"{'method':<36}{'seconds':>10}{'boxes/s':>16}{'ratio':>8}")
    for name, seconds in (("object_boxes stage (pipeline call)", t_stage),
                          ("numpy core (box_problems)", t_core),
                          ("per-box Python loop (extrapolated)", t_loop)):
        print(f"{name:<36}{seconds:>10.3f}{n / seconds:>16,.0f}{t_loop / seconds:>8.1f}")
    report("object_boxes", "boxes validated per second (stage call, 1 core)", n / t_stage, ">= 1e6")
    print(f"stage vs loop agree on rejected rows: {assert_same}; "
          f"target >= 1,000,000 boxes/s: {'met' if n / t_stage >= 1e6 else 'NOT met'}")


if __name__ == "__main__":
    main()
