"""A release that travels: media copied into the release (``release.media: copy``), referenced
relative to it (``relative``) or embedded (``embed``), read back by the training loader, PIL,
the exporters and ``datasets`` from a copy of the release after the original media are gone;
embeddings as fixed-size arrays that numpy, torch and Ray take directly; a copied release on S3
lists its media in the manifest; and the same inputs still give the same bytes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.release.portable import resolve_media_uri
from pipeline.release.source import TableSource
from pipeline.release.stream import gather
from pipeline.release.writer import InputFingerprint, write_release_stream
from pipeline.run.config import parse_config
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from pipeline.training.loader import ReleaseDataset
from stages.media_check import MediaCheck
from stages.placeholder_lint import PlaceholderLint
from tests.interchange.helpers import write_image

SPAN = "<|image_start|><|image_pad|><|image_end|>"
DIM = 8
VOCAB = {"image": 8192, "audio": 8192, "video": 8192}
KEPT_OBJECTS = [f"obj-{i}" for i in range(6)]


def staged(tmp_path: Path) -> tuple[pa.Table, Path]:
    """Six kept object rows (two share an image) with CLIP-like embeddings, two texts, one reject
    whose image is missing; the media under ``tmp_path/world/src/media``."""
    src = tmp_path / "world" / "src"
    records: list[dict[str, Any]] = []
    for i in range(5):
        write_image(src / "media" / f"img-{i}.{'jpg' if i == 0 else 'png'}", seed=i)
    for i in range(6):
        name = f"img-{min(i, 4)}.{'jpg' if i == 0 else 'png'}"  # obj-4 and obj-5: the same file
        records.append({"id": f"obj-{i}", "kind": "object", "content": f"{SPAN} A shape {i}.",
                        "media": [{"modality": "image", "uri": f"media/{name}"}], "source": "t",
                        "license": "CC0-1.0", "captions": [f"caption {i}"]})
    records += [{"id": f"txt-{i}", "kind": "text", "content": f"plain text {i}", "source": "t",
                 "license": "CC0-1.0"} for i in range(2)]
    records.append({"id": "bad-media", "kind": "object", "content": f"{SPAN} gone",
                    "media": [{"modality": "image", "uri": "media/missing.png"}], "source": "t", "license": "CC0-1.0"})
    manifest = src / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    table = run_stages(read_inputs([str(manifest)], 1 << 20), [PlaceholderLint(), MediaCheck()]).table
    rng = np.random.default_rng(0)
    kinds = table["kind"].to_pylist()
    image = [[rng.standard_normal(DIM).astype(np.float16).tolist()] if k == "object" else None for k in kinds]
    text = [[rng.standard_normal(DIM).astype(np.float16).tolist()] * (1 + n % 2) if k == "object" else None
            for n, k in enumerate(kinds)]
    emb = pa.list_(pa.list_(pa.float16()))
    table = table.append_column("clip_image_emb", pa.array(image, emb))
    return table.append_column("clip_text_emb", pa.array(text, emb)), manifest


def build(tmp_path: Path, media: str, root: Path | str | None = None, block_rows: int = 1 << 20,
          shard_target_bytes: int = 100_000_000, rows: tuple[pa.Table, Path] | None = None) -> str:
    table, manifest = rows or staged(tmp_path)
    source = TableSource(table, block_rows=block_rows)
    inputs = [InputFingerprint(str(manifest), *fingerprint_input(str(manifest)))]
    gathered = gather(source, [i.uri for i in inputs], VOCAB)
    return write_release_stream(source, gathered, root=str(root or tmp_path / "world" / "rel"), dataset="ds",
                                version="v1", inputs=inputs, config_hash="c", code_version="t", vocab=VOCAB,
                                media=media, shard_target_bytes=shard_target_bytes).uri


def loaded(release: str | Path, **kwargs: Any) -> dict[str, Any]:
    return {s.id: s for s in ReleaseDataset(str(release), kinds=["object"], decode_images=True, **kwargs)}


def shards(release: Path, prefix: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(release.glob(prefix)))


def test_copied_release_opens_its_media_after_the_originals_are_gone(tmp_path: Path) -> None:
    release = Path(build(tmp_path, "copy"))
    manifest = json.loads((release / "manifest.json").read_text())
    files = manifest["media_files"]
    assert manifest["media"] == {"mode": "copy", "files": 5, "bytes": sum(f["bytes"] for f in files)}
    for f in files:  # content-addressed: media/<aa>/<sha256><ext>, the sha256 of the bytes stored
        data = (release / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        assert f["path"] == f"media/{f['sha256'][:2]}/{f['sha256']}{Path(f['path']).suffix}"
    objects = shards(release, "data/object-*.parquet")
    uris = {r["id"]: r["media"][0]["uri"] for r in objects.to_pylist()}
    assert sorted(uris) == KEPT_OBJECTS and uris["obj-4"] == uris["obj-5"]  # the same file stored once
    assert all(u.startswith("media/") for u in uris.values()) and uris["obj-0"].endswith(".jpg")
    reject = pq.read_table(next(release.glob("rejects/*/*/part-*.parquet"))).to_pylist()[0]
    assert Path(reject["media"][0]["uri"]).is_absolute()  # rejects keep what the build read
    assert "copied release opens them" in (release / "README.md").read_text()

    moved = tmp_path / "elsewhere" / "v1"
    shutil.copytree(release, moved)
    (tmp_path / "world" / "src" / "media").rename(tmp_path / "world" / "src" / "gone")
    shutil.rmtree(release)
    samples = loaded(moved, verify_media_sha256=True)
    assert sorted(samples) == KEPT_OBJECTS
    for sample in samples.values():
        (image,) = sample.images
        assert image.shape == (120, 160, 3)
        path = resolve_media_uri(str(moved), sample.row["media"][0]["uri"])
        assert path == sample.media[0].uri and path.startswith(str(moved / "media"))
        with Image.open(path) as im:
            assert im.size == (160, 120)

    from pipeline.interchange.exporters import run_export
    from pipeline.training.mix_command import read_pool

    pool = read_pool([str(moved / "data" / "object-00000.parquet")])
    assert all(Path(r["media"][0]["uri"]).is_file() for r in pool.to_pylist())  # a mix lies elsewhere

    assert "6 conversations" in run_export("llava", str(moved), str(tmp_path / "llava"))
    assert len(list((tmp_path / "llava" / "images").iterdir())) == 6


def test_relative_release_opens_its_media_when_moved_with_them(tmp_path: Path) -> None:
    release = Path(build(tmp_path, "relative"))
    uri = pq.read_table(next(release.glob("data/object-*.parquet")))["media"].to_pylist()[0][0]["uri"]
    assert uri.startswith("../../../src/media/")  # relative to <world>/rel/ds/v1
    assert not (release / "media").exists()
    shutil.copytree(tmp_path / "world", tmp_path / "moved")
    shutil.rmtree(tmp_path / "world")
    moved = tmp_path / "moved" / "rel" / "ds" / "v1"
    samples = loaded(moved)
    assert sorted(samples) == KEPT_OBJECTS
    assert all(s.media[0].uri.startswith(str(tmp_path / "moved" / "src" / "media")) for s in samples.values())
    with Image.open(samples["obj-1"].media[0].uri) as im:
        assert im.size == (160, 120)


def test_embedded_release_carries_the_bytes(tmp_path: Path) -> None:
    release = Path(build(tmp_path, "embed"))
    objects = shards(release, "data/object-*.parquet")
    assert objects.schema.field("media_bytes").type == pa.list_(pa.binary())
    row = objects.to_pylist()[0]
    assert row["media"][0]["uri"] == "img-0.jpg" and row["media_bytes"][0][:2] == b"\xff\xd8"
    assert "media_bytes" not in json.loads((release / "jsonl" / "object-00000.jsonl").read_text().splitlines()[0])
    moved = tmp_path / "elsewhere"
    shutil.copytree(release, moved)
    shutil.rmtree(tmp_path / "world")
    samples = loaded(moved)
    assert sorted(samples) == KEPT_OBJECTS and all(s.images[0].shape == (120, 160, 3) for s in samples.values())


def test_embeddings_are_fixed_size_arrays_in_every_shard_of_a_kind(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    release = Path(build(tmp_path, "copy", shard_target_bytes=600))  # several object shards
    paths = sorted(release.glob("data/object-*.parquet"))
    assert len(paths) > 1
    schemas = {pq.read_schema(p).remove_metadata() for p in paths}
    assert len(schemas) == 1  # the kind decided the types once
    schema = pq.read_schema(paths[0])
    assert schema.field("clip_image_emb").type == pa.list_(pa.float16(), DIM)
    assert schema.field("clip_text_emb").type == pa.list_(pa.list_(pa.float16(), DIM))  # 1 or 2 captions
    table = shards(release, "data/object-*.parquet")
    column = table["clip_image_emb"].combine_chunks()
    matrix = column.values.to_numpy().reshape(len(column), DIM)
    assert matrix.shape == (6, DIM) and matrix.dtype == np.float16
    import torch

    assert torch.from_numpy(matrix.astype(np.float32)).shape == (6, DIM)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(str(release), "object", split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(ds["id"]) == KEPT_OBJECTS
    feature = ds.features["clip_image_emb"]
    assert getattr(feature, "length", None) == DIM
    assert np.asarray(ds.with_format("numpy")["clip_image_emb"]).shape == (6, DIM)
    text = datasets.load_dataset(str(release), "text", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(text["id"]) == ["txt-0", "txt-1"]


def test_ray_iter_torch_batches_takes_the_embeddings(ray_local: None, tmp_path: Path) -> None:
    from pipeline.training.loader import ray_dataset

    release = build(tmp_path, "copy")
    ds = ray_dataset(release, kinds=["object"], columns=["clip_image_emb"])
    batches = list(ds.iter_torch_batches(batch_size=16))
    tensor = batches[0]["clip_image_emb"]
    assert tuple(tensor.shape) == (6, DIM)
    rows = ray_dataset(release, kinds=["object"]).take_all()
    assert all(r["media"][0]["uri"].startswith(f"{release}/media/") for r in rows)


def test_same_inputs_give_the_same_copied_release_whatever_the_blocks(tmp_path: Path) -> None:
    rows = staged(tmp_path)
    one = Path(build(tmp_path, "copy", tmp_path / "one", block_rows=1 << 20, shard_target_bytes=600, rows=rows))
    many = Path(build(tmp_path, "copy", tmp_path / "many", block_rows=2, shard_target_bytes=600, rows=rows))
    m1, m2 = (json.loads((r / "manifest.json").read_text()) for r in (one, many))
    assert [(s["path"], s["sha256"]) for s in m1["shards"]] == [(s["path"], s["sha256"]) for s in m2["shards"]]
    assert m1["media_files"] == m2["media_files"] and len(m1["media_files"]) == 5


def test_copied_release_on_s3_lists_its_media(s3_bucket: str, tmp_path: Path) -> None:
    import boto3

    root = f"s3://{s3_bucket}/portable"
    uri = build(tmp_path, "copy", root=root)
    s3 = boto3.client("s3")
    prefix = uri.removeprefix(f"s3://{s3_bucket}/")
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["media"]["files"] == 5
    for f in manifest["media_files"]:
        body = s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/{f['path']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == f["sha256"]
    shutil.rmtree(tmp_path / "world" / "src" / "media")
    samples = loaded(uri)
    assert sorted(samples) == KEPT_OBJECTS
    assert samples["obj-0"].media[0].uri.startswith(f"{uri}/media/")


def test_release_media_is_a_config_setting() -> None:
    cfg = parse_config({"dataset": "d", "version": "v", "inputs": ["m.jsonl"], "stages": []})
    assert cfg.release.media == "copy"
    relative = parse_config({"dataset": "d", "version": "v", "inputs": ["m.jsonl"], "stages": [],
                             "release": {"media": "relative"}})
    assert relative.release.media == "relative" and relative.config_hash() != cfg.config_hash()
    with pytest.raises(Exception, match="media"):
        parse_config({"dataset": "d", "version": "v", "inputs": ["m.jsonl"], "stages": [],
                      "release": {"media": "absolute"}})


def test_a_release_is_an_evaluation_set_with_its_fixed_size_embeddings(tmp_path: Path) -> None:
    from pipeline.run.eval_sets import eval_index
    from stages.dataset_checks import EvalSet

    release = Path(build(tmp_path, "copy"))
    assert pq.read_schema(next(release.glob("data/object-*.parquet"))).field("clip_image_emb").type == \
        pa.list_(pa.float16(), DIM)
    assert "clip_image_emb" not in pq.read_schema(next(release.glob("data/text-*.parquet"))).names
    index = eval_index(EvalSet(name="rel", path=str(release)), "clip_image_emb", 1)
    table = shards(release, "data/object-*.parquet")
    assert index.ids == table["id"].to_pylist() and index.emb.shape == (6, DIM)
    stored = table["clip_image_emb"].combine_chunks().values.to_numpy().reshape(6, DIM).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    assert np.allclose(np.asarray(index.emb, np.float32), stored, atol=2e-3)
    assert {"plain text #", "caption #"} <= set(index.texts)  # numbers folded; the text kind is read too
