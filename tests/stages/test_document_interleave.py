"""document_interleave: reading order into content, layout and assign placement, rejections."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.run.ingest import read_manifest
from schemas.placeholder_grammar import span
from schemas.reason_codes import ReasonCode
from stages.document_interleave import DocumentInterleave
from stages.document_similarity import figure_traits, shape_colour_similarity, split_sentences
from stages.placeholder_lint import PlaceholderLint
from tests.stages.document_rows import (
    SPAN_RE,
    document_table,
    figure_numbers,
    lint,
    shuffle_items,
    world_documents,
    write_figure,
)

RULES = {"placement": "assign", "similarity": "shape_colour_rules"}
PAD = span("image", 1)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    return world_documents(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def world(source: pa.Table) -> pa.Table:
    return shuffle_items(source)


@pytest.mark.parametrize("params", [{}, RULES, {"max_tokens": 12}])
def test_example_doc_clean_stays_ok_and_lints(examples_dir: Path, params: dict) -> None:
    table = read_manifest(str(examples_dir / "documents.jsonl"))
    out = PlaceholderLint()(DocumentInterleave(params)(table))
    rows = out.to_pylist()
    assert rows[0]["id"] == "doc-clean" and {r["status"] for r in rows} == {"ok"}
    assert [lint(r) for r in rows] == [None] * len(rows)
    assert all(r["content"] for r in rows)


def test_layout_writes_paragraphs_and_spans_in_reading_order(examples_dir: Path) -> None:
    row = DocumentInterleave()(read_manifest(str(examples_dir / "documents.jsonl"))).to_pylist()[0]
    assert row["content"] == "\n\n".join([
        "Report on shapes. Section 1 studies circles.", PAD, "Figure 1 shows a red circle.",
        "Section 2 studies squares; Figure 2 shows a blue square.", PAD])
    # ingest resolved the refs (access.paths): media/doc-fig-N.png under the manifest's folder
    assert [m["uri"] for m in row["media"]] == [str(examples_dir.resolve() / "media" / f"doc-fig-{n}.png")
                                                for n in (1, 2)]
    assert [(i["type"], i["media_index"]) for i in row["items"]] == [
        ("text", None), ("image", 0), ("text", None), ("text", None), ("image", 1)]
    assert (row["doc_windows"], row["doc_window"], row["doc_tokens"]) == (1, None, 7 + 3 + 6 + 10 + 3)


def test_layout_on_shuffled_sample_world_restores_the_source_order(world: pa.Table, source: pa.Table) -> None:
    out = DocumentInterleave()(world).to_pylist()
    assert len(out) == source.num_rows >= 20
    for row, original in zip(out, source.to_pylist(), strict=True):
        expected = [PAD if i["type"] == "image" else i["text"] for i in original["items"]]
        assert row["status"] == "ok" and row["content"].split("\n\n") == expected, row["id"]
        assert row["media"] == original["media"] and lint(row) is None


def test_assign_places_each_sample_world_figure_before_the_sentence_that_describes_it(world: pa.Table) -> None:
    out = DocumentInterleave(RULES)(world).to_pylist()
    figures = 0
    for row in out:
        assert row["status"] == "ok" and lint(row) is None and row["doc_dropped_media"] == []
        spans = list(SPAN_RE.finditer(row["content"]))
        assert len(spans) == len(row["media"]) == len(row["items"]) - len(
            [i for i in row["items"] if i["type"] == "text"])
        for match, number in zip(spans, figure_numbers(row), strict=True):
            after = row["content"][match.end():]
            assert re.match(rf" Figure {number} shows an? (large|small) \w+ \w+\.", after), (row["id"], number)
            figures += 1
    assert figures >= 30


def test_assign_after_puts_the_span_after_its_sentence(examples_dir: Path) -> None:
    table = read_manifest(str(examples_dir / "documents.jsonl"))
    row = DocumentInterleave({**RULES, "assign_side": "after"})(table).to_pylist()[0]
    assert f"Figure 1 shows a red circle. {PAD}" in row["content"]
    assert row["content"].endswith(f"Figure 2 shows a blue square. {PAD}")
    assert lint(row) is None


def test_assign_drops_weak_images_and_gives_a_sentence_at_most_one(tmp_path: Path) -> None:
    media = [write_figure(tmp_path, "near", "red", "circle", "small"),
             write_figure(tmp_path, "odd", "green", "square", "large"),
             write_figure(tmp_path, "far", "red", "circle", "small")]
    items = [{"type": "image", "media_index": 0, "page": 1, "bbox": [40, 40, 280, 220]},
             {"type": "text", "text": "Figure 1 shows a small red circle.", "page": 1, "bbox": [40, 240, 560, 260]},
             {"type": "image", "media_index": 1, "page": 2, "bbox": [40, 40, 280, 220]},
             {"type": "image", "media_index": 2, "page": 3, "bbox": [40, 40, 280, 220]}]
    table = document_table([{"id": "weak", "media": media, "items": items}], tmp_path)
    row = DocumentInterleave(RULES)(table).to_pylist()[0]
    assert row["status"] == "ok" and lint(row) is None
    assert row["content"] == f"{PAD} Figure 1 shows a small red circle."
    assert [m["uri"] for m in row["media"]] == [str(tmp_path.resolve() / "media" / "near.png")]  # the nearer
    assert row["doc_dropped_media"] == [str(tmp_path.resolve() / "media" / f"{n}.png") for n in ("odd", "far")]
    assert [(i["type"], i["media_index"]) for i in row["items"]] == [("image", 0), ("text", None)]


def test_assign_reads_figures_and_sentences_by_the_documented_rules(tmp_path: Path) -> None:
    import cv2

    ref = write_figure(tmp_path, "fig", "purple", "triangle", "large")
    image = cv2.imread(str(tmp_path / ref["uri"]))[:, :, ::-1]
    traits = figure_traits(image)
    assert traits is not None and (traits.colour, traits.shape, traits.size) == ("purple", "triangle", "large")
    sim = shape_colour_similarity([image], ["A large purple triangle.", "Triangles are fun.", "Nothing here."])
    assert sim.round(3).tolist() == [[1.0, 0.333, 0.0]]
    text = 'One. "Two!" Three? Four'
    assert [text[a:b] for a, b in split_sentences(text)] == ["One.", '"Two!"', "Three?", "Four"]


def test_bad_documents_are_rejected_with_a_reason(tmp_path: Path) -> None:
    img = write_figure(tmp_path, "a", "red", "circle", "small")
    text = {"type": "text", "text": "Some text.", "page": 1, "bbox": [0, 0, 10, 10]}
    records = [
        {"id": "no-items", "items": []},
        {"id": "unplaced", "media": [img], "items": [text]},
        {"id": "out-of-range", "media": [img], "items": [text, {"type": "image", "media_index": 3, "page": 1}]},
        {"id": "twice", "media": [img], "items": [{"type": "image", "media_index": 0, "page": 1},
                                                  {"type": "image", "media_index": 0, "page": 1}]},
        {"id": "wrong-kind", "media": [{**img, "modality": "audio"}],
         "items": [{"type": "image", "media_index": 0, "page": 1}]},
        {"id": "missing-file", "media": [{**img, "uri": "media/none.png"}],
         "items": [text, {"type": "image", "media_index": 0, "page": 1}]},
    ]
    out = DocumentInterleave(RULES)(document_table(records, tmp_path)).to_pylist()
    got = {r["id"]: (r["reject_code"], r["reject_detail"]) for r in out}
    schema = str(ReasonCode.SCHEMA)
    assert got["no-items"] == (schema, "document has no items")
    assert got["unplaced"] == (schema, "media ref(s) [0] placed by no item")
    assert got["out-of-range"][0] == schema and "media_index 3" in got["out-of-range"][1]
    assert got["twice"] == (schema, "items[1] places media ref 0 a second time")
    assert got["wrong-kind"] == (schema, "items[0] is image but media ref 0 is audio")
    assert got["missing-file"][0] == str(ReasonCode.MEDIA) and "media/none.png" in got["missing-file"][1]
    assert {r["reject_stage"] for r in out} == {"document_interleave"}


def test_other_rows_and_written_documents_pass_unchanged(tmp_path: Path) -> None:
    table = document_table([{"id": "done", "content": "Already written.", "items": [
        {"type": "text", "text": "x", "page": 1}]}], tmp_path)
    text_row = table.to_pylist()[0] | {"id": "t", "kind": "text", "items": None}
    table = pa.Table.from_pylist([table.to_pylist()[0], text_row], schema=table.schema)
    out = DocumentInterleave()(table)
    assert out.select(table.column_names).to_pylist() == table.to_pylist()
    assert out["doc_windows"].to_pylist() == [None, None]


def test_stage_runs_from_the_cli(examples_dir: Path, tmp_path: Path) -> None:
    args = ["stage", "document_interleave", "--input", str(examples_dir / "documents.jsonl"),
            "--output", str(tmp_path), "--set", "placement=assign", "--set", "similarity=shape_colour_rules"]
    assert main(args) == 0
    rows = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok"] and lint(rows[0]) is None
