"""The release-layout functions the shard writer calls, on small tables: per-kind columns with a
marker, fixed-size embeddings, column descriptions, card features equal to what `datasets`
writes, and portable media (relative, copied, embedded)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipeline.release.card import CardConfig, card_markdown, describe_schema, hf_features
from pipeline.release.kind_schemas import NonNullCounts, fixed_size_embeddings, kind_columns, shard_table
from pipeline.release.portable import PortableMediaError, portable_media
from schemas.records import ROW_SCHEMA

EMB = pa.list_(pa.list_(pa.float16()))


def rows(tmp_path: Path) -> pa.Table:
    img = tmp_path / "media" / "a.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    img.write_bytes(b"\x89PNG fake bytes")
    base = {"status": "ok", "source": "s", "license": "CC0-1.0", "placeholder_version": "v1",
            "review_status": "unreviewed", "manifest_root": str(tmp_path), "source_ref": "m.jsonl:1"}
    data = [
        {**base, "id": "o1", "kind": "object", "content": "x", "boxes": [], "media": [
            {"modality": "image", "uri": str(img)}]},
        {**base, "id": "o2", "kind": "object", "content": "y", "media": [{"modality": "image", "uri": str(img)}]},
        {**base, "id": "t1", "kind": "text", "content": "z", "media": []},
    ]
    table = pa.Table.from_pylist(data, schema=ROW_SCHEMA)
    table = table.append_column("clip_image_emb", pa.array([[[1.0, 2.0]], [[3.0, 4.0]], None], EMB))
    table = table.append_column("clip_text_emb", pa.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]], None], EMB))
    return table.append_column("chair_i", pa.array([0.0, None, None], pa.float64()))


def test_each_kind_keeps_its_own_columns_and_a_marker(tmp_path: Path) -> None:
    table = rows(tmp_path)
    counts, other = NonNullCounts(), NonNullCounts()
    counts.add(table.slice(0, 1))
    other.add(table.slice(1))
    counts.merge(other)  # per-block accumulators merge to the same counts
    obj = kind_columns("object", table.schema, counts)
    txt = kind_columns("text", table.schema, counts)
    assert "boxes" in obj and "captions" in obj and "clip_image_emb" in obj and "chair_i" in obj
    assert "status" not in obj and "manifest_root" not in obj and "items" not in obj
    assert "boxes" not in txt and "clip_image_emb" not in txt and "chair_i" not in txt
    assert kind_columns("object", table.schema, counts, "rejects") == table.schema.names
    shard = shard_table(table.slice(0, 2), "object", obj)
    assert shard["release_part"].to_pylist() == ["data", "data"]
    assert shard.schema.field("clip_image_emb").type == pa.list_(pa.float16(), 2)
    assert shard.schema.field("clip_text_emb").type == pa.list_(pa.list_(pa.float16(), 2))
    assert shard.schema.field("id").metadata[b"description"].startswith(b"unique sample id")
    vectors = shard["clip_image_emb"].combine_chunks()
    assert vectors.flatten().to_numpy().reshape(2, 2).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="release part"):
        shard_table(table, "object", obj, "elsewhere")


def test_embeddings_of_mixed_widths_are_left_as_they_are() -> None:
    table = pa.table({"e": pa.array([[[1.0, 2.0]], [[1.0, 2.0, 3.0]]], EMB)})
    assert fixed_size_embeddings(table).schema == table.schema


def test_card_features_equal_what_datasets_writes(tmp_path: Path) -> None:
    from datasets import Features

    table = rows(tmp_path)
    counts = NonNullCounts()
    counts.add(table)
    shard = shard_table(table.slice(0, 2), "object", kind_columns("object", table.schema, counts))
    for schema in (shard.schema, ROW_SCHEMA):
        assert hf_features(schema) == Features.from_arrow_schema(schema)._to_yaml_list()
    card = card_markdown("ds", "v1", [CardConfig("object", ["data/object-*.parquet"], shard.schema),
                                      CardConfig("rejects", ["rejects/*/*/part-*.parquet"], ROW_SCHEMA)],
                         licenses=["CC0-1.0"], counts={"kept": 2, "rejected": 1, "input_records": 3})
    front = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["object", "rejects"]
    assert front["configs"][0]["default"] is True and front["license"] == "cc0-1.0"
    assert "| `release_part` | `string` | data (kept training rows)" in card
    assert describe_schema(ROW_SCHEMA).field("reject_code").metadata[b"description"] == b"reason code (ERR_CROSS_MDL_*)"


def test_portable_media_relative_copy_and_embed(tmp_path: Path) -> None:
    table = rows(tmp_path)
    release = tmp_path / "rel" / "ds" / "v1"
    relative = portable_media(table, "relative", str(release))
    assert relative["media"].to_pylist()[0][0]["uri"] == "../../../media/a.png"
    put: dict[str, bytes] = {}
    copied = portable_media(table, "copy", str(release), put=put.__setitem__)
    uri = copied["media"].to_pylist()[0][0]["uri"]
    assert uri.startswith("media/") and uri.endswith(".png") and list(put) == [uri]  # stored once
    assert copied["media"].to_pylist()[1][0]["uri"] == uri
    embedded = portable_media(table, "embed", str(release))
    assert embedded["media_bytes"].to_pylist()[:2] == [[b"\x89PNG fake bytes"]] * 2
    assert embedded["media"].to_pylist()[0][0]["uri"] == "a.png" and embedded["media_bytes"][2].as_py() == []
    (tmp_path / "media" / "a.png").unlink()
    with pytest.raises(PortableMediaError, match="o1: media\\[0\\]"):
        portable_media(table, "copy", str(release), put=put.__setitem__)


def test_copied_refs_keep_every_other_field_null_and_row(tmp_path: Path) -> None:
    """Copy mode rewrites uris column-wise: each file read and stored once, in order of first
    use; null lists and null negatives stay null; the rest of each ref is untouched; a file gone
    missing names the row and the ref, also when it is not a row's first."""
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a", "b", "c"):
        (media / f"{name}.png").write_bytes(name.encode() * 8)
    ref = lambda n, w: {"modality": "image", "uri": str(media / f"{n}.png"), "width": w}  # noqa: E731
    base = {"status": "ok", "kind": "object", "content": "x", "source": "s", "license": "CC0-1.0",
            "placeholder_version": "v1", "review_status": "unreviewed", "source_ref": "m.jsonl:1"}
    data = [{**base, "id": "skip", "media": [ref("c", 1)]},
            {**base, "id": "r0", "media": [ref("b", 2), ref("a", 3)]},
            {**base, "id": "r1", "media": None},
            {**base, "id": "r2", "media": []},
            {**base, "id": "r3", "media": [ref("a", 4), ref("c", 5)]}]
    table = pa.Table.from_pylist(data, schema=ROW_SCHEMA).slice(1)  # offsets that do not start at 0
    table = table.append_column("negative_media", pa.array([None, str(media / "b.png"), None, None]))
    put: dict[str, bytes] = {}
    out = portable_media(table, "copy", str(tmp_path / "rel"), put=put.__setitem__)
    stored = list(put)
    assert [put[p] for p in stored] == [b"b" * 8, b"a" * 8, b"c" * 8]  # first use order, once each
    b, a, c = stored
    got = out["media"].to_pylist()
    assert [[(r["uri"], r["width"]) for r in refs] if refs is not None else None for refs in got] == \
        [[(b, 2), (a, 3)], None, [], [(a, 4), (c, 5)]]
    assert out["negative_media"].to_pylist() == [None, b, None, None]
    assert out["id"].to_pylist() == ["r0", "r1", "r2", "r3"] and out.schema == table.schema
    (media / "c.png").unlink()
    with pytest.raises(PortableMediaError, match=r"r3: media\[1\]"):
        portable_media(table, "copy", str(tmp_path / "rel2"), put={}.__setitem__)
