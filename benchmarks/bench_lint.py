"""Lint throughput on a ~100 MB JSONL shard, as a ratio to pyarrow's own JSON read of the file.

Target (issue 2): lint MB/s >= 0.5 x pyarrow.json.read_json MB/s. Both sides are timed here, in
one run, best of 3; the lint side includes its own read of the file.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.json as pajson

from benchmarks._result import report
from pipeline.release.lint import lint_shard
from schemas.placeholder_grammar import span
from schemas.placeholders import PlaceholderLinter

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]


def make_shard(path: Path, target_bytes: int, seed: int = 0) -> int:
    """Rows shaped like released object/segment rows: pads or discrete tokens, boxes, captions."""
    rng = random.Random(seed)
    written = 0
    with path.open("w", encoding="utf-8") as fh:
        i = 0
        while written < target_bytes:
            a, b = f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}", f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}"
            if i % 4 == 0:
                n = rng.randint(16, 64)
                body = span("image", ids=[rng.randrange(8192) for _ in range(n)])
                media = [
                    {"modality": "image", "uri": f"s3://b/m/{i}.png", "num_tokens": n, "width": 256, "height": 192}
                ]
            elif i % 4 == 1:
                body = span("video") + span("audio")
                media = [
                    {"modality": "video", "uri": f"s3://b/m/{i}.mp4"},
                    {"modality": "audio", "uri": f"s3://b/m/{i}.wav"},
                ]
            else:
                body = span("image")
                media = [{"modality": "image", "uri": f"s3://b/m/{i}.png", "width": 256, "height": 192}]
            content = f"{body} A <box>{a}</box> to the left of a <box>{b}</box>. " + " ".join(
                rng.choice(["the", "shape", "is", "near", "large", "small", "and", "a"])
                for _ in range(rng.randint(20, 80))
            )
            row = {
                "id": f"obj-{i:08d}",
                "kind": "object",
                "content": content,
                "media": media,
                "source": "bench",
                "license": "CC0-1.0",
                "placeholder_version": "v1",
                "review_status": "unreviewed",
                "boxes": [
                    {"label": a, "bbox": [10.0, 20.0, 60.0, 80.0], "format": "pascal_voc"},
                    {"label": b, "bbox": [120.0, 20.0, 200.0, 90.0], "format": "pascal_voc"},
                ],
                "captions": [f"A {a} and a {b}.", f"The {a} is left of the {b}."],
            }
            line = json.dumps(row, ensure_ascii=False) + "\n"
            fh.write(line)
            written += len(line.encode())
            i += 1
    return written


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    size = int(os.environ.get("XMODAL_BENCH_LINT_MB", "20" if quick else "100")) * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "object-00000.jsonl"
        nbytes = make_shard(path, size)
        mb = nbytes / 1e6
        linter = PlaceholderLinter()
        findings = lint_shard(str(path), linter)
        if findings:
            raise SystemExit(f"benchmark shard should be clean, got {findings[:3]}")
        t_read = best_of(3, lambda: pajson.read_json(str(path), read_options=pajson.ReadOptions(block_size=16 << 20)))
        t_lint = best_of(3, lambda: lint_shard(str(path), linter))
    ratio = t_read / t_lint
    print("| shard MB | pyarrow read_json MB/s | xmodal lint MB/s | ratio (target >= 0.5) |")
    print(f"| {mb:8.1f} | {mb / t_read:22.1f} | {mb / t_lint:16.1f} | {ratio:21.2f} |")
    report("lint", f"lint MB/s / pyarrow read_json MB/s ({mb:.0f} MB JSONL)", ratio, ">= 0.5")
    report("lint", "lint MB/s", mb / t_lint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
