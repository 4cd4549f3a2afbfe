"""A Hugging Face export opened by Ray Data: `read_parquet` + `iter_torch_batches` take the
fixed-size embeddings as one tensor (no custom collate), and `read_json` reads the JSONL."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.interchange.exporters import run_export
from tests.interchange.test_export import DIM, build_release


@pytest.mark.ray
def test_ray_reads_the_exported_release(ray_local: None, tmp_path: Path) -> None:
    import ray
    import torch

    out = tmp_path / "hf"
    run_export("hf", str(build_release(tmp_path)), str(out))
    ds = ray.data.read_parquet(str(out / "data" / "object-00000.parquet"))
    batch = next(iter(ds.select_columns(["clip_image_emb", "clip_score"]).iter_torch_batches(batch_size=3)))
    assert isinstance(batch["clip_image_emb"], torch.Tensor) and tuple(batch["clip_image_emb"].shape) == (3, DIM)
    rows = ray.data.read_json(str(out / "jsonl" / "object-00000.jsonl")).take(10)
    assert sorted(r["id"] for r in rows) == ["llava-1", "obj-0", "obj-1"]
