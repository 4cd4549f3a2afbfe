"""The release loader: every kept row exactly once across ranks and workers, shuffling, the
span and media checks (raise or skip and count), shard integrity, S3 and the Ray Data path."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.training.loader import (
    MalformedSampleError,
    ReleaseDataset,
    ReleaseReadError,
    ShardIntegrityError,
    open_release,
    partition_rows,
    ray_dataset,
)
from pipeline.training.release_shards import check_batch

VOCAB = {"image": 8192, "audio": 8192, "video": 8192}


def kept_ids(release: str | Path) -> list[str]:
    index = open_release(str(release))
    return [i for s in index.shards for i in pq.read_table(s.uri, columns=["id"])["id"].to_pylist()]


def sample_id(sample: object) -> str:
    return sample.id  # type: ignore[attr-defined]


def rewrite_shard(release: Path, rel: str, edit: object, *, update_manifest: bool = True) -> None:
    """Apply ``edit`` (rows -> rows) to one shard; optionally record the new bytes in the manifest."""
    table = pq.read_table(release / rel)
    rows = edit(table.to_pylist())  # type: ignore[operator]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), sink)
    data = sink.getvalue().to_pybytes()
    (release / rel).write_bytes(data)
    if update_manifest:
        manifest = json.loads((release / "manifest.json").read_text())
        for shard in manifest["shards"]:
            if shard["path"] == rel:
                shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        (release / "manifest.json").write_text(json.dumps(manifest))


def break_row(rows: list[dict], index: int = 1) -> list[dict]:
    rows[index]["content"] += " <|image_start|><|image_pad|><|image_end|>"  # one span too many
    return rows


def test_partition_covers_every_row_once_and_balances() -> None:
    rng = random.Random(0)
    for _ in range(300):
        shard_rows = [rng.randint(0, 9) for _ in range(rng.randint(1, 6))]
        parts = rng.randint(1, 7)
        seen: list[tuple[int, int]] = []
        sizes = []
        for part in range(parts):
            pieces = partition_rows(shard_rows, part, parts)
            seen += [(shard, r) for shard, start, stop in pieces for r in range(start, stop)]
            sizes.append(sum(stop - start for _, start, stop in pieces))
        assert sorted(seen) == [(s, r) for s, n in enumerate(shard_rows) for r in range(n)]
        assert max(sizes) - min(sizes) <= 1


def test_every_kept_row_once_across_ranks_and_workers(release_uri: str) -> None:
    expected = kept_ids(release_uri)
    manifest = open_release(release_uri).manifest
    assert len(expected) == manifest["counts"]["kept"] == 57
    assert len(open_release(release_uri).shards) >= 6
    got: list[str] = []
    for rank in range(2):
        ds = ReleaseDataset(release_uri, rank=rank, world_size=2, shuffle=True, shuffle_buffer_size=4,
                            transform=sample_id)
        loader = DataLoader(ds, batch_size=5, num_workers=2)
        got += [i for batch in loader for i in batch]
    assert Counter(got) == Counter(expected)
    for world in (1, 3, 5):  # in-process, more consumers than some shards have rows
        ids = [s.id for r in range(world) for s in ReleaseDataset(release_uri, rank=r, world_size=world)]
        assert Counter(ids) == Counter(expected)


def test_shuffle_is_seeded_per_epoch_and_keeps_the_set(release_uri: str) -> None:
    ds = ReleaseDataset(release_uri, kinds=["object"], shuffle=True, shuffle_buffer_size=8, seed=3)
    first = [s.id for s in ds]
    again = [s.id for s in ds]
    ds.set_epoch(1)
    second = [s.id for s in ds]
    plain = [s.id for s in ReleaseDataset(release_uri, kinds=["object"])]
    assert first == again and first != second and first != plain
    assert sorted(first) == sorted(second) == sorted(plain) and len(plain) == 28
    assert all(s.kind == "object" for s in ds)


def test_samples_carry_checked_media_and_decoded_images(release_uri: str) -> None:
    ds = ReleaseDataset(release_uri, kinds=["object", "segment"], decode_images=True, verify_media_sha256=True,
                        verify_sha256=True)
    samples = list(ds)
    objects = [s for s in samples if s.kind == "object"]
    assert len(objects) == 28 and all(len(s.images) == 1 and s.captions for s in objects)
    first = objects[0]
    assert first.images[0].shape == (first.media[0].height, first.media[0].width, 3)
    assert first.images[0].dtype.name == "uint8" and first.shard.endswith(".parquet")
    assert all(s.images == () for s in samples if s.kind == "segment")  # video/audio refs are not decoded


def test_malformed_span_raises_naming_shard_and_id(tampered_release: Path) -> None:
    rel = "data/object-00000.parquet"
    bad_id = pq.read_table(tampered_release / rel, columns=["id"])["id"][1].as_py()
    rewrite_shard(tampered_release, rel, break_row)
    with pytest.raises(MalformedSampleError) as err:
        list(ReleaseDataset(str(tampered_release), kinds=["object"]))
    assert err.value.sample_id == bad_id and err.value.rule == "placeholder/span_count"
    assert rel in str(err.value) and bad_id in str(err.value)


def test_missing_image_is_malformed_and_skips_are_counted_across_workers(tampered_release: Path) -> None:
    def missing_image(rows: list[dict]) -> list[dict]:
        rows[0]["media"][0]["uri"] = str(tampered_release / "no-such.png")
        return rows

    rewrite_shard(tampered_release, "data/object-00001.parquet", missing_image)
    with pytest.raises(MalformedSampleError, match="no-such.png: cannot read") as err:
        list(ReleaseDataset(str(tampered_release), kinds=["object"], decode_images=True))
    assert err.value.rule == "media"

    rewrite_shard(tampered_release, "data/object-00000.parquet", break_row)
    ds = ReleaseDataset(str(tampered_release), kinds=["object"], on_error="skip", decode_images=True,
                        transform=sample_id)
    ids = [i for batch in DataLoader(ds, batch_size=4, num_workers=2) for i in batch]
    assert len(ids) == len(set(ids)) == 26
    assert ds.skipped == {"placeholder": 1, "media": 1}


def test_shard_checksum_and_row_count_come_from_the_manifest(tampered_release: Path) -> None:
    rel = "data/object-00001.parquet"
    rewrite_shard(tampered_release, rel, lambda rows: list(reversed(rows)), update_manifest=False)
    assert len(list(ReleaseDataset(str(tampered_release), kinds=["object"]))) == 28  # rows still agree
    with pytest.raises(ShardIntegrityError, match=f"{rel}: sha256"):
        list(ReleaseDataset(str(tampered_release), kinds=["object"], verify_sha256=True))
    rewrite_shard(tampered_release, rel, lambda rows: rows[:-1])
    with pytest.raises(ShardIntegrityError, match="rows, manifest says"):
        list(ReleaseDataset(str(tampered_release), kinds=["object"]))


def test_release_resolution(release_uri: str, tmp_path: Path) -> None:
    dataset_dir = str(Path(release_uri).parent)
    assert open_release(dataset_dir).uri == release_uri  # follows `latest`
    with pytest.raises(ReleaseReadError, match="no manifest.json"):
        open_release(str(tmp_path))


@pytest.mark.s3
def test_reads_a_release_from_s3(release_uri: str, s3_bucket: str) -> None:
    import boto3

    root, s3 = Path(release_uri), boto3.client("s3")
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=s3_bucket, Key=f"releases/sw/v1/{path.relative_to(root)}", Body=path.read_bytes())
    prefix = f"s3://{s3_bucket}/releases/sw/v1"
    ids = [s.id for r in range(2) for s in ReleaseDataset(prefix, rank=r, world_size=2, verify_sha256=True)]
    assert Counter(ids) == Counter(kept_ids(release_uri))


@pytest.mark.ray
def test_ray_data_path_yields_every_kept_row_once_and_drops_malformed(ray_local: None, tampered_release: Path) -> None:
    uri = str(tampered_release)
    rel = "data/object-00000.parquet"
    broken = pq.read_table(tampered_release / rel, columns=["id"])["id"][1].as_py()
    rewrite_shard(tampered_release, rel, break_row)  # the manifest has its new sha256
    expected = kept_ids(uri)
    index = {rid: i for i, rid in enumerate(expected)}

    def number(batch: pa.Table) -> pa.Table:
        return pa.table({"n": pa.array([index[i] for i in batch["id"].to_pylist()], pa.int64())})

    ds = ray_dataset(uri, verify_sha256=True, on_error="skip").map_batches(number, batch_format="pyarrow")
    got = torch.cat([b["n"] for b in ds.iter_torch_batches(batch_size=8)]).tolist()
    assert sorted(got) == sorted(i for rid, i in index.items() if rid != broken)
    assert len(got) == len(expected) - 1 == 56


def test_ray_batch_check_raises_or_drops(tampered_release: Path) -> None:
    rel = "data/object-00000.parquet"
    rewrite_shard(tampered_release, rel, break_row)
    table = pq.read_table(tampered_release / rel)
    batch = table.append_column("path", pa.array([str(tampered_release / rel)] * table.num_rows))
    with pytest.raises(MalformedSampleError, match=f"{table['id'][1].as_py()}' in shard .*{rel}: placeholder"):
        check_batch(batch, vocab=VOCAB, on_error="raise")
    kept = check_batch(batch, vocab=VOCAB, on_error="skip")
    assert kept.column_names == table.column_names
    assert kept["id"].to_pylist() == [i for k, i in enumerate(table["id"].to_pylist()) if k != 1]


def test_token_vocabulary_comes_from_the_manifest_unless_given(tampered_release: Path) -> None:
    manifest = json.loads((tampered_release / "manifest.json").read_text())
    manifest["placeholder_vocab"] = {"image": 1}  # only <IMG_TK_0> is in range
    (tampered_release / "manifest.json").write_text(json.dumps(manifest))
    tokens = list(ReleaseDataset(str(tampered_release), kinds=["object"], vocab={"image": 8192}))
    over = [s.id for s in tokens if any(int(t) >= 1 for t in re.findall(r"<IMG_TK_(\d+)>", s.content))]
    assert over, "the sample world has rows with discrete image tokens"
    ds = ReleaseDataset(str(tampered_release), kinds=["object"], on_error="skip")
    kept = [s.id for s in ds]
    assert ds.skipped["placeholder"] == len(over) and not set(over) & set(kept)
    assert len(kept) + len(over) == len(tokens) == 28
