"""Release layout, manifest, reconciliation, lint gate and atomic replacement (local disk)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.release.shards import encode_jsonl
from pipeline.release.writer import InputFingerprint, ReleaseError, write_release
from pipeline.run.ingest import fingerprint_input
from pipeline.run.local_runner import read_inputs, run_stages
from stages.placeholder_lint import PlaceholderLint

VOCAB = {"image": 8192, "audio": 8192, "video": 8192}


def make_manifest(tmp_path: Path, n: int = 30) -> str:
    lines = []
    for i in range(n):
        content = "héllo <|image_start|> wörld" if i % 7 == 0 else f"text {i} — naïve “quotes” <b>"
        lines.append(
            json.dumps(
                {"id": f"t-{i:03d}", "kind": "text", "content": content, "source": "s", "license": "CC0-1.0"},
                ensure_ascii=False,
            )
        )
    lines.append('{"id": "t-broken", "kind": ')
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def release(tmp_path: Path, manifest: str, **kw: object) -> tuple[pa.Table, dict]:
    table = run_stages(read_inputs([manifest], 1 << 20), [PlaceholderLint()]).table
    result = write_release(
        table,
        root=str(tmp_path / "rel"),
        dataset="ds",
        version="v1",
        inputs=[InputFingerprint(manifest, *fingerprint_input(manifest))],
        config_hash="c" * 64,
        code_version="test",
        vocab=VOCAB,
        **kw,  # type: ignore[arg-type]
    )
    return table, result.manifest


def release_table(tmp_path: Path, table: pa.Table, manifest: str) -> Any:
    """``write_release`` of ``table`` as dataset ds, version v1, under tmp_path/rel."""
    return write_release(
        table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
        inputs=[InputFingerprint(manifest, *fingerprint_input(manifest))],
        config_hash="c", code_version="t", vocab=VOCAB,
    )


def test_layout_counts_and_checksums(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    _, man = release(tmp_path, manifest, shard_target_bytes=1500)
    root = tmp_path / "rel" / "ds" / "v1"
    counts = man["counts"]
    assert counts["input_records"] == 31 == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_code"] == {"ERR_CROSS_MDL_SCHEMA": 1, "ERR_CROSS_MDL_TOKEN_FMT": 5}
    data = sorted(p.name for p in (root / "data").iterdir())
    assert len(data) > 1 and data[0] == "text-00000.parquet"  # the size target split the kind
    kept_rows = 0
    for shard in man["shards"]:
        blob = (root / shard["path"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == shard["sha256"] and len(blob) == shard["bytes"]
        if shard["format"] == "parquet" and shard["kind"] != "rejects":
            kept_rows += pq.read_table(root / shard["path"]).num_rows
    assert kept_rows == counts["kept"]
    assert (root / "rejects" / "placeholder_lint" / "ERR_CROSS_MDL_TOKEN_FMT" / "part-00000.parquet").is_file()
    assert (root / "rejects" / "ingest" / "ERR_CROSS_MDL_SCHEMA" / "part-00000.parquet").is_file()
    assert (tmp_path / "rel" / "ds" / "latest").read_text().strip() == "v1"
    jsonl = (root / "jsonl" / "text-00000.jsonl").read_text(encoding="utf-8")
    assert "naïve “quotes” <b>" in jsonl and "\\u" not in jsonl  # ensure_ascii=False, no HTML escaping
    ids = [json.loads(line)["id"] for line in jsonl.splitlines()]
    assert ids == sorted(ids)
    assert not [p for p in (tmp_path / "rel" / "ds").iterdir() if p.name.startswith(".")]  # no temp dir left


def test_existing_version_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    release(tmp_path, manifest)
    with pytest.raises(ReleaseError, match="already exists"):
        release(tmp_path, manifest)
    _, man = release(tmp_path, manifest, overwrite=True)
    assert man["counts"]["input_records"] == 31


def test_same_input_gives_byte_identical_shards(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    _, first = release(tmp_path, manifest)
    _, second = release(tmp_path, manifest, overwrite=True)
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]


def test_counts_that_do_not_reconcile_stop_the_release(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    table = run_stages(read_inputs([manifest], 1 << 20), [PlaceholderLint()]).table
    with pytest.raises(ReleaseError, match="do not reconcile"):
        release_table(tmp_path, table.slice(1), manifest)
    assert not (tmp_path / "rel" / "ds" / "v1").exists()


def test_lint_failure_stops_the_release(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    table = read_inputs([manifest], 1 << 20)  # no lint stage ran: bad rows are still "ok"
    with pytest.raises(ReleaseError, match="placeholder lint failed"):
        release_table(tmp_path, table, manifest)
    assert not (tmp_path / "rel" / "ds").exists() or not any((tmp_path / "rel" / "ds").iterdir())


def test_negative_pairs_go_to_negatives_not_data(tmp_path: Path) -> None:
    import pyarrow.compute as pc

    manifest = make_manifest(tmp_path)
    table = run_stages(read_inputs([manifest], 1 << 20), [PlaceholderLint()]).table
    anchor = table.filter(pc.equal(table["id"], "t-001"))
    for name, value in (("id", "t-001-txneg0"), ("parent_id", "t-001")):
        idx = table.schema.get_field_index(name)
        anchor = anchor.set_column(idx, table.schema.field(idx), pa.array([value]))
    negative = anchor
    table = pa.concat_tables([table, negative])
    table = table.append_column("negative_type", pa.array([None] * (table.num_rows - 1) + ["replace_colour"]))
    result = release_table(tmp_path, table, manifest)
    root = tmp_path / "rel" / "ds" / "v1"
    pairs = pq.read_table(root / "negatives" / "pairs-00000.parquet")
    assert pairs["id"].to_pylist() == ["t-001-txneg0"] and pairs["parent_id"].to_pylist() == ["t-001"]
    data_ids = [
        i
        for s in result.manifest["shards"]
        if s["path"].startswith("data/")
        for i in pq.read_table(root / s["path"])["id"].to_pylist()
    ]
    assert "t-001-txneg0" not in data_ids and "t-001" in data_ids
    assert result.manifest["counts"]["derived_kept"] == 1


def test_escaping_media_without_media_check_is_a_release_error(tmp_path: Path) -> None:
    line = {"id": "o-1", "kind": "object", "content": "<|image_start|><|image_pad|><|image_end|> x",
            "media": [{"modality": "image", "uri": "../../etc/passwd"}], "source": "s", "license": "l"}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(line) + "\n")
    table = read_inputs([str(path)], 1 << 20)
    assert table["reject_code"].to_pylist() == ["ERR_CROSS_MDL_MEDIA"]  # ingest refused the ref
    # A row built by hand (no ingest) with that ref: the writer refuses it too.
    rows = [{**r, "status": "ok", "reject_stage": None, "reject_code": None, "reject_detail": None}
            for r in table.to_pylist()]
    table = pa.Table.from_pylist(rows, schema=table.schema)
    with pytest.raises(ReleaseError, match="media_check"):
        write_release(table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
                      inputs=[InputFingerprint(str(path), *fingerprint_input(str(path)))],
                      config_hash="c", code_version="t", vocab=VOCAB)


def test_jsonl_shard_rows_read_back_as_the_parquet_rows() -> None:
    """Every JSONL line parses (strict JSON: no NaN) to its row; non-finite floats at any depth
    become null, bytes become hex, and non-ASCII text is written as UTF-8."""
    nan, inf = float("nan"), float("inf")
    table = pa.table({
        "id": ["a", "b", "c"],
        "score": [0.25, nan, -inf],
        "emb": pa.array([[1.0, 2.0**-16], [inf, 0.5], None], pa.list_(pa.float32())),
        "meta": [{"w": 1.5, "tag": "é"}, {"w": nan, "tag": "x"}, {"w": None, "tag": None}],
        "blob": [b"\x00\xff", None, b""],
    })
    lines = encode_jsonl(table).decode("utf-8").splitlines()
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) for line in lines]
    assert rows == [
        {"id": "a", "score": 0.25, "emb": [1.0, 2.0**-16], "meta": {"w": 1.5, "tag": "é"}, "blob": "00ff"},
        {"id": "b", "score": None, "emb": [None, 0.5], "meta": {"w": None, "tag": "x"}, "blob": None},
        {"id": "c", "score": None, "emb": None, "meta": {"w": None, "tag": None}, "blob": ""},
    ]
    assert '"tag":"é"' in lines[0]
    assert encode_jsonl(table.slice(0, 0)) == b""


def test_every_shard_is_its_groups_rows_in_order(tmp_path: Path, examples_dir: Path) -> None:
    """With a small size target every kind, every reject code and the negative pairs span several
    shards; read back in shard order they are exactly that group's rows, sorted by kind and id."""
    import pyarrow.compute as pc

    from stages.media_check import MediaCheck
    from tests.integration.example_world import write_world

    manifest = str(write_world(tmp_path, examples_dir, copies=4,
                               files=("objects.jsonl", "segments.jsonl", "documents.jsonl")))
    table = run_stages(read_inputs([manifest], 1 << 20), [PlaceholderLint(), MediaCheck()]).table
    # Every third kept row also appears as a negative pair of itself (a derived row).
    kept = table.filter(pc.equal(table["status"], "ok"))
    negs = kept.take(list(range(0, kept.num_rows, 3)))
    for name, values in (("id", [f"{i}-neg" for i in negs["id"].to_pylist()]), ("parent_id", negs["id"])):
        idx = negs.schema.get_field_index(name)
        negs = negs.set_column(idx, negs.schema.field(idx), pa.array(values, pa.string()))
    # Derived rows rejected by one stage with two codes across two kinds: ordering by kind before
    # code would interleave the codes.
    picks = [pc.index(kept["kind"], "object").as_py(), pc.index(kept["kind"], "segment").as_py()]
    extra = kept.take(picks * 2)
    for name, values in (("id", [f"x-{k}" for k in range(4)]), ("parent_id", extra["id"]),
                         ("status", ["rejected"] * 4), ("reject_stage", ["x_stage"] * 4),
                         ("reject_code", ["ERR_A", "ERR_A", "ERR_B", "ERR_B"])):
        idx = extra.schema.get_field_index(name)
        extra = extra.set_column(idx, extra.schema.field(idx), pa.array(values, pa.string()))
    table = pa.concat_tables([table, extra, negs])
    table = table.append_column(
        "negative_type", pa.array([None] * (table.num_rows - negs.num_rows) + ["replace_colour"] * negs.num_rows))
    result = write_release(table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
                           inputs=[InputFingerprint(manifest, *fingerprint_input(manifest))],
                           config_hash="c", code_version="t", vocab=VOCAB, shard_target_bytes=3000)
    root = tmp_path / "rel" / "ds" / "v1"

    def read_back(prefix: str) -> list[str]:
        paths = sorted(s["path"] for s in result.manifest["shards"] if s["path"].startswith(prefix))
        assert len(paths) > 1, prefix  # the target split the group
        if prefix.startswith("jsonl/"):
            return [json.loads(line)["id"] for p in paths for line in (root / p).read_text().splitlines()]
        return [i for p in paths for i in pq.read_table(root / p)["id"].to_pylist()]

    def ids_in_order(rows: pa.Table) -> list[str]:
        return rows.sort_by([("kind", "ascending"), ("id", "ascending")])["id"].to_pylist()

    plain = kept.filter(pc.equal(kept["kind"], "object"))
    assert read_back("data/object-") == ids_in_order(plain)
    assert read_back("jsonl/object-") == ids_in_order(plain)
    assert read_back("negatives/") == ids_in_order(negs)
    rejected = table.filter(pc.not_equal(table["status"], "ok"))
    groups = set(zip(rejected["reject_stage"].to_pylist(), rejected["reject_code"].to_pylist(), strict=True))
    split = 0
    for stage, code in sorted(groups):
        in_group = pc.and_(pc.equal(rejected["reject_stage"], stage), pc.equal(rejected["reject_code"], code))
        rows = rejected.filter(in_group)
        folder = f"rejects/{stage}/{code}/"
        paths = sorted(s["path"] for s in result.manifest["shards"] if s["path"].startswith(folder))
        assert [i for p in paths for i in pq.read_table(root / p)["id"].to_pylist()] == ids_in_order(rows)
        split += len(paths) > 1
    assert len(groups) >= 3 and split >= 1
    assert sum(s["rows"] for s in result.manifest["shards"] if s["format"] == "parquet") == table.num_rows


def test_the_manifest_records_the_token_vocabulary_the_loader_checks_with(tmp_path: Path) -> None:
    from pipeline.training.release_shards import open_release

    manifest = make_manifest(tmp_path)
    table = run_stages(read_inputs([manifest], 1 << 20), [PlaceholderLint()]).table
    vocab = {"image": 16384, "audio": 4096, "video": 8192}
    result = write_release(table, root=str(tmp_path / "rel"), dataset="ds", version="v1",
                           inputs=[InputFingerprint(manifest, *fingerprint_input(manifest))],
                           config_hash="c", code_version="t", vocab=vocab)
    assert result.manifest["placeholder_vocab"] == {"audio": 4096, "image": 16384, "video": 8192}
    assert open_release(result.uri).vocab() == vocab
    assert open_release(result.uri).vocab({"image": 1}) == {"image": 1, "audio": 8192, "video": 8192}
