"""Exports of a release the test builds: WebDataset tars read back by `webdataset` and by
open_clip's training loader, LLaVA JSON that imports back to the same conversations, and the
Hugging Face folder opened by `datasets.load_dataset` (offline), DuckDB, polars and pandas, with
its media still there after the folder is copied elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.interchange.commands import run_import
from pipeline.interchange.exporters import run_export
from pipeline.release.writer import InputFingerprint, write_release
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.media_check import MediaCheck
from stages.placeholder_lint import PlaceholderLint
from tests.interchange.helpers import write_image

SPAN = "<|image_start|><|image_pad|><|image_end|>"
DIM = 8


def build_release(tmp_path: Path) -> Path:
    """A release of 3 object rows (one imported from LLaVA), 2 text rows and 2 rejects, with
    CLIP-like embeddings on the object rows."""
    src = tmp_path / "src"
    records: list[dict[str, Any]] = []
    for i in range(3):
        write_image(src / "media" / f"img-{i}.{'png' if i else 'jpg'}", seed=i)
    for i, caption in enumerate(["A red <box>car</box> on a street.", "A grey square."]):
        records.append({"id": f"obj-{i}", "kind": "object", "content": f"{SPAN} {caption}",
                        "media": [{"modality": "image", "uri": f"media/img-{i}.{'png' if i else 'jpg'}"}],
                        "source": "test", "license": "CC0-1.0", "captions": [f"caption {i}"],
                        "boxes": [{"label": "car", "bbox": [1, 2, 30, 40], "format": "pascal_voc"}] if i == 0 else []})
    records.append({"id": "llava-1", "kind": "object", "media": [{"modality": "image", "uri": "media/img-2.png"}],
                    "content": (f"USER: What is this?\n{SPAN}\nASSISTANT: A shape.\n"
                                "USER: Which colour?\nASSISTANT: Grey."),
                    "source": "test", "license": "CC-BY-4.0"})
    records += [{"id": f"txt-{i}", "kind": "text", "content": f"plain text {i}", "source": "test",
                 "license": "CC0-1.0"} for i in range(2)]
    records.append({"id": "bad-media", "kind": "object", "content": f"{SPAN} gone",
                    "media": [{"modality": "image", "uri": "media/missing.png"}], "source": "t", "license": "CC0-1.0"})
    manifest = src / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in records) + '\n{"id": "broken", "kind": \n')
    table = run_stages(read_inputs([str(manifest)], 1 << 20), [PlaceholderLint(), MediaCheck()]).table
    rng = np.random.default_rng(0)
    image_emb = [[rng.standard_normal(DIM).astype(np.float16).tolist()] if k == "object" else None
                 for k in table["kind"].to_pylist()]
    text_emb = [[rng.standard_normal(DIM).astype(np.float16).tolist()] * 2 if k == "object" else None
                for k in table["kind"].to_pylist()]
    emb_type = pa.list_(pa.list_(pa.float16()))
    table = table.append_column("clip_image_emb", pa.array(image_emb, emb_type))
    table = table.append_column("clip_text_emb", pa.array(text_emb, emb_type))
    gaps = {"obj-0": [0.1, None], "obj-1": [None]}  # lists holding nulls, as clip_score writes them
    table = table.append_column("clip_counterfactual_gaps", pa.array([gaps.get(i) for i in table["id"].to_pylist()],
                                                                     pa.list_(pa.float32())))
    table = table.append_column("clip_score", pa.array([0.3 if k == "object" else None
                                                        for k in table["kind"].to_pylist()], pa.float32()))
    write_release(table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
                  inputs=[InputFingerprint(str(manifest), *fingerprint_input(str(manifest)))],
                  config_hash="c", code_version="t", vocab={"image": 8192, "audio": 8192, "video": 8192})
    return tmp_path / "rel" / "ds" / "v1"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("release"))


def test_webdataset_export_reads_back_with_webdataset_and_open_clip(release: Path, tmp_path: Path) -> None:
    import open_clip
    import webdataset as wds
    from open_clip_train.data import get_wds_dataset

    out = tmp_path / "wds"
    summary = run_export("webdataset", str(release), str(out), samples_per_shard=2)
    assert "3 samples in 2 tar(s)" in summary
    samples = list(wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False)
                   .decode("pil").to_tuple("__key__", "jpg;png", "txt", "json"))
    assert [s[0] for s in samples] == ["llava-1", "obj-0", "obj-1"]
    for _, image, _, _ in samples:
        assert image.size == (160, 120)  # every image decodes
    assert samples[1][2] == "A red car on a street." and samples[1][3]["license"] == "CC0-1.0"
    assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 2, "00001.tar": 1}

    class Args:  # the fields of open_clip's argparse namespace that its WebDataset loader reads
        train_data = f"{out}/{{00000..00001}}.tar"
        val_data = None
        train_num_samples = None
        dataset_resampled = False
        train_data_upsampling_factors = None
        seed = 0
        batch_size = 1
        workers = 1
        world_size = 1

    preprocess = open_clip.image_transform(32, is_train=False)
    data = get_wds_dataset(Args(), preprocess, is_train=True, tokenizer=open_clip.get_tokenizer("RN50"))
    batches = list(data.dataloader)
    assert data.dataloader.num_samples == 3 and len(batches) == 3
    assert tuple(batches[0][0].shape) == (1, 3, 32, 32) and tuple(batches[0][1].shape) == (1, 77)


def test_llava_export_imports_back_to_the_same_conversations(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "llava"
    run_export("llava", str(release), str(out))
    entries = {e["id"]: e for e in json.loads((out / "llava.json").read_text())}
    assert entries["llava-1"]["conversations"] == [
        {"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A shape."},
        {"from": "human", "value": "Which colour?"}, {"from": "gpt", "value": "Grey."}]
    assert entries["obj-1"]["conversations"][1] == {"from": "gpt", "value": "A grey square."}
    again = tmp_path / "again.jsonl"
    run_import("llava", [str(out / "llava.json")], str(again), license="CC-BY-4.0")
    back = {json.loads(x)["id"]: json.loads(x) for x in again.read_text().splitlines()}
    original = pq.read_table(release / "data" / "object-00000.parquet").to_pylist()
    assert back["llava-llava-1"]["content"] == next(r["content"] for r in original if r["id"] == "llava-1")


def test_hf_export_opens_in_datasets_duckdb_polars_pandas(release: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb
    import polars as pl
    from datasets import Features, load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    built = tmp_path / "hf"
    run_export("hf", str(release), str(built))
    copied = tmp_path / "elsewhere" / "hf"  # a release copied to another folder
    shutil.copytree(built, copied)
    shutil.rmtree(built)

    card = (copied / "README.md").read_text()
    objects = load_dataset(str(copied), "object", split="train")
    assert sorted(objects["id"]) == ["llava-1", "obj-0", "obj-1"]
    assert set(objects[0]["release_part"] for _ in range(1)) == {"data"}
    declared = pq.read_schema(copied / "data" / "object-00000.parquet")
    assert objects.features == Features.from_arrow_schema(declared)
    assert "items" not in objects.column_names and "subtitles" not in objects.column_names  # own columns only
    texts = load_dataset(str(copied), "text", split="train")
    assert sorted(texts["id"]) == ["txt-0", "txt-1"] and "clip_image_emb" not in texts.column_names
    rejects = load_dataset(str(copied), "rejects", split="train")
    assert sorted(rejects["id"]) == ["bad-media", "broken"] and set(rejects["release_part"]) == {"rejects"}
    assert "config_name: object" in card and "| `clip_image_emb` |" in card

    emb = objects.select_columns(["clip_image_emb"]).with_format("numpy")[:]["clip_image_emb"]
    assert emb.shape == (3, DIM)  # fixed-size: one (n, d) array, no collate needed
    arrow = pq.read_table(copied / "data" / "object-00000.parquet")["clip_image_emb"].combine_chunks()
    assert arrow.flatten().to_numpy().reshape(len(arrow), arrow.type.list_size).dtype == np.float16
    field = declared.field("clip_image_emb")
    assert pa.types.is_fixed_size_list(field.type) and field.metadata[b"description"].startswith(b"CLIP image")
    assert pa.types.is_fixed_size_list(declared.field("clip_text_emb").type.value_type)

    con = duckdb.connect()
    every = con.sql(f"select release_part, count(*) from read_parquet('{copied}/**/*.parquet', union_by_name=true) "
                    "group by 1 order by 1").fetchall()
    assert every == [("data", 5), ("rejects", 2)]  # the marker tells kept rows from rejects
    assert pl.read_parquet(copied / "data" / "text-00000.parquet").height == 2
    assert pd_rows(copied / "data" / "object-00000.parquet") == 3
    for row in objects:
        path = copied / row["media"][0]["uri"]  # relative to the release, inside it
        assert row["media"][0]["uri"].startswith("media/") and path.is_file()
        import cv2

        assert cv2.imread(str(path)) is not None

    jsonl = load_dataset("json", data_files=str(copied / "jsonl" / "object-00000.jsonl"), split="train")
    assert sorted(jsonl["id"]) == ["llava-1", "obj-0", "obj-1"]


def pd_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_parquet(path))
