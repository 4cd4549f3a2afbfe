"""Shared helpers of the interchange tests: real images on disk, `xmodal check` on a manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from pipeline.cli import main


def write_image(path: Path, width: int = 160, height: int = 120, seed: int = 0) -> Path:
    """A real, decodable image (a coloured rectangle on grey), PNG or JPEG by suffix."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 128, np.uint8)
    x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    img[y:y + height // 3, x:x + width // 3] = rng.integers(0, 255, 3, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, img)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check(manifest: Path, out: Path, stages: str | None = None) -> dict[str, dict[str, Any]]:
    """``xmodal check MANIFEST --out OUT``; the results by id."""
    argv = ["check", str(manifest), "--out", str(out)] + (["--stages", stages] if stages else [])
    assert main(argv) == 0
    rows = pq.read_table(out / "results.parquet").to_pylist()
    return {r["id"]: r for r in rows}
