"""The hostile inputs of issue 15, one by one (the fuzz in ``test_fuzz_ingest.py`` draws them at
random): each line that took a run down is now one rejected row whose detail names its line and
field, and a Parquet manifest carries the same values to the same verdicts as JSON lines. A
corrupt Parquet row group loses only its own rows; a run with nothing to reject publishes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.run.ingest import fingerprint_input, read_manifest

BASE = '{{"id": "{rid}", "kind": "{kind}", "content": "x", "source": "s", "license": "CC0-1.0"{more}}}'
DEEP = "[" * 1000 + "]" * 1000
SCHEMA = "ERR_CROSS_MDL_SCHEMA"

# (id, kind, the rest of the line, None if ingest keeps it, else a piece of the detail after "m.jsonl:N: ")
LINES: list[tuple[str, str, str, str | None]] = [
    ("deep", "text", f', "extra": {DEEP}', "JSON nested 1001 levels deep, over the limit of 64"),
    ("deep-line", "text", "", "JSON nested 1001 levels deep"),  # the whole line in 1,000 lists, below
    ("width-max", "object", ', "media": [{"modality": "image", "uri": "a.png", "width": 2147483647}]', None),
    ("width-2-31", "object", ', "media": [{"modality": "image", "uri": "a.png", "width": 2147483648}]',
     "media.0.width: Input should be less than or equal to 2147483647"),
    ("rate-2-31", "segment", ', "media": [{"modality": "audio", "uri": "a.wav", "sample_rate": 4294967296}]',
     "media.0.sample_rate: Input should be less than or equal to 2147483647"),
    ("start-2-63", "segment", ', "start_us": 9223372036854775808, "duration_us": 1',
     "start_us: Input should be less than or equal to 9223372036854775807"),
    ("end-2-63", "segment", ', "start_us": 9223372036854775807, "duration_us": 1',
     "record: Value error, start_us + duration_us is over 9223372036854775807"),
    ("sub-2-64", "segment", ', "subtitles": [{"start_us": 0, "duration_us": 18446744073709551616, "text": "a"}]',
     "subtitles.0.duration_us: Input should be less than or equal to 9223372036854775807"),
    ("box-400-digits", "object", ', "boxes": [{"label": "a", "bbox": [0, 0, 1' + "0" * 400 + ', 5], '
     '"format": "pascal_voc"}]', "boxes.0.bbox.2: Input should be a valid number"),
    ("box-5000-digits", "object", ', "boxes": [{"label": "a", "bbox": [0, 0, ' + "9" * 5000 + ', 5], '
     '"format": "pascal_voc"}]', "invalid JSON: Exceeds the limit (4300 digits)"),
    ("box-2-64", "object", ', "boxes": [{"label": "a", "bbox": [0, 0, 18446744073709551616, 5], '
     '"format": "pascal_voc"}]', None),  # a float64 holds it: object_boxes says it is outside the image
    ("surrogate", "text", ', "captions": ["a", "\\ud800"]',
     "captions.1: lone UTF-16 surrogate escape, not valid Unicode text"),
    ("surrogate-key", "text", ', "\\udfff": 1', "key '\\udfff': lone UTF-16 surrogate escape"),
    ("surrogate-pair", "text", ', "captions": ["\\ud83d\\ude00"]', None),  # a real pair is an emoji
    ("dup-id", "text", ', "id": "dup-id-2"', "'id': duplicate key in one JSON object"),
    ("dup-nested", "object", ', "media": [{"modality": "image", "uri": "a.png", "uri": "b.png"}]',
     "'uri': duplicate key in one JSON object"),
    ("doc-nan", "document", ', "items": [{"type": "text", "text": "a", "page": 1, "bbox": [NaN, 0, 1, 1]}]',
     "items.0.bbox.0: Input should be a finite number"),
    ("doc-inf", "document", ', "items": [{"type": "text", "text": "a", "page": 1, "bbox": [0, 0, Infinity, 1]}]',
     "items.0.bbox.2: Input should be a finite number"),
    ("doc-minus-inf", "document", ', "items": [{"type": "text", "text": "a", "page": 1, "bbox": [0, -Infinity, 1, 1]}]',
     "items.0.bbox.1: Input should be a finite number"),
    ("fps-inf", "segment", ', "media": [{"modality": "video", "uri": "a.mp4", "fps": Infinity}]',
     "media.0.fps: Input should be a finite number"),
    ("import-reject-empty", "text", ', "import_reject": {}', "import_reject: not an importer's reject"),
    ("import-reject-code", "text", ', "import_reject": {"code": "ERR_CROSS_MDL_OBJ_BBOX", "detail": "x"}',
     "import_reject: not an importer's reject"),
]


def line_of(rid: str, kind: str, more: str) -> str:
    line = BASE.format(rid=rid, kind=kind, more=more)
    return "[" * 1000 + line + "]" * 1000 if rid == "deep-line" else line


def test_each_hostile_line_is_one_reject_naming_its_line_and_field(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(line_of(rid, kind, more) for rid, kind, more, _ in LINES) + "\n")
    table = read_manifest(str(manifest))
    assert table.num_rows == len(LINES) == fingerprint_input(str(manifest))[2]
    for i, (row, (rid, _, _, expected)) in enumerate(zip(table.to_pylist(), LINES, strict=True), start=1):
        assert row["source_ref"] == f"{manifest}:{i}"
        if expected is None:
            assert (row["id"], row["status"]) == (rid, "ok"), row
            continue
        assert (row["status"], row["reject_stage"], row["reject_code"]) == ("rejected", "ingest", SCHEMA), row
        assert row["reject_detail"].startswith(f"{manifest}:{i}: {expected}"), row
    assert main(["check", str(manifest), "--out", str(tmp_path / "check")]) == 0


def test_a_token_id_of_thousands_of_digits_is_a_vocab_violation(tmp_path: Path) -> None:
    """Found by ``benchmarks/fuzz_ingest.py``: ``int()`` of a 5,000-digit token id raised inside
    the linter, so its batch was retried row by row and the row's detail was the exception."""
    content = "<|image_start|><IMG_TK_" + "9" * 5000 + "><|image_end|> a shape"
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "tok", "kind": "object", "content": content, "source": "s",
                                    "license": "CC0-1.0", "media": [{"modality": "image", "uri": "a.png"}]}) + "\n")
    assert main(["check", str(manifest), "--out", str(tmp_path / "out"), "--stages", "placeholder_lint"]) == 0
    (row,) = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert (row["reject_stage"], row["reject_code"]) == ("placeholder_lint", "ERR_CROSS_MDL_TOKEN_FMT")
    assert "token id 999999999999...(5000 digits) >= image vocab" in row["reject_detail"]


def test_parquet_carries_the_same_values_to_the_same_verdicts(tmp_path: Path) -> None:
    """Non-finite layout boxes and out-of-range numbers, as Parquet holds them (float64 NaN and
    infinities, int64 and uint64 columns), get the detail the JSON line gets."""
    item = {"type": "text", "text": "a", "page": 1}
    rows = [
        {"id": "doc-nan", "kind": "document", "items": [{**item, "bbox": [math.nan, 0.0, 1.0, 1.0]}]},
        {"id": "doc-inf", "kind": "document", "items": [{**item, "bbox": [0.0, 0.0, math.inf, 1.0]}]},
        {"id": "doc-minus-inf", "kind": "document", "items": [{**item, "bbox": [0.0, -math.inf, 1.0, 1.0]}]},
        {"id": "width-2-31", "kind": "object", "media": [{"modality": "image", "uri": "a.png", "width": 2**31}]},
        {"id": "start-2-63", "kind": "segment", "start_us": 2**63, "duration_us": 1},
    ]
    base = {"content": "x", "source": "s", "license": "CC0-1.0"}
    table = pa.Table.from_pylist([{**r, **base} for r in rows], schema=pa.schema([
        ("id", pa.string()), ("kind", pa.string()), ("content", pa.string()), ("source", pa.string()),
        ("license", pa.string()), ("start_us", pa.uint64()), ("duration_us", pa.int64()),
        ("media", pa.list_(pa.struct([("modality", pa.string()), ("uri", pa.string()), ("width", pa.int64())]))),
        ("items", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string()), ("page", pa.int32()),
                                      ("bbox", pa.list_(pa.float64()))]))),
    ]))
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    got = read_manifest(str(path)).to_pylist()
    expected = {rid: detail for rid, _, _, detail in LINES}
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for i, row in enumerate(got):
        assert (row["status"], row["reject_code"]) == ("rejected", SCHEMA), row
        assert row["reject_detail"].startswith(f"{path}:{i}: {expected[row['id']]}"), row


def test_a_duplicate_parquet_column_is_the_duplicate_key_of_json(tmp_path: Path) -> None:
    columns = {"id": ["a-1", "a-2"], "kind": ["text"] * 2, "content": ["x"] * 2, "source": ["s"] * 2,
               "license": ["l"] * 2}
    table = pa.Table.from_arrays([pa.array(v) for v in columns.values()] + [pa.array(["b-1", "b-2"])],
                                 names=[*columns, "id"])
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    got = read_manifest(str(path)).to_pylist()
    assert [(r["status"], r["reject_code"], r["reject_detail"]) for r in got] == [
        ("rejected", SCHEMA, f"{path}:{i}: id: duplicate column name") for i in range(2)]


def test_a_corrupt_row_group_rejects_its_own_rows_only(tmp_path: Path) -> None:
    rows = [{"id": f"t-{i}", "kind": "text", "content": f"text number {i}" * 20, "source": "s", "license": "CC0-1.0"}
            for i in range(20)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=5, compression="zstd")
    data = bytearray(buf.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(2).column(2)  # rows 10-14, content
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path = tmp_path / "m.parquet"
    path.write_bytes(bytes(data))
    table = read_manifest(str(path))
    assert table.num_rows == 20 == fingerprint_input(str(path))[2]
    for i, row in enumerate(table.to_pylist()):
        assert row["source_ref"] == f"{path}:{i}"
        if 10 <= i < 15:
            assert (row["status"], row["reject_code"]) == ("rejected", SCHEMA)
            assert row["reject_detail"].startswith(f"{path}:{i}: row group 2 (rows 10-14) is unreadable")
        else:
            assert (row["id"], row["status"]) == (f"t-{i}", "ok")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("where", ["ray", "local"])
def test_a_run_with_nothing_to_reject_publishes(ray_local: None, where: str, tmp_path: Path) -> None:
    """20 clean records: the report's example rejects come from an empty selection."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(BASE.format(rid=f"t-{i}", kind="text", more="") + "\n" for i in range(20)))
    config = tmp_path / "clean.yaml"
    config.write_text(json.dumps({"dataset": "clean", "version": "v1", "inputs": [str(manifest)],
                                  "stages": ["placeholder_lint"], "release": {"output": str(tmp_path / "rel")}}))
    assert main(["run", str(config), *(["--local"] if where == "local" else [])]) == 0
    counts = json.loads((tmp_path / "rel" / "clean" / "v1" / "manifest.json").read_text())["counts"]
    assert (counts["input_records"], counts["kept"], counts["rejected"]) == (20, 20, 0)
