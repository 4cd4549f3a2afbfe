"""negatives_filter on a real (tiny, random) open_clip model: scores, mining, and the drops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

from schemas.reason_codes import ReasonCode
from stages.base import conform
from stages.caption_edits import positive_captions
from stages.clip_embedder import ClipEmbedder
from stages.negatives_filter import NegativesFilter
from stages.negatives_image import NegativesImage
from stages.negatives_mining import (
    FALSE_NEGATIVE_VERDICTS,
    KEPT,
    FilterRules,
    cap_per_positive,
    false_negative_rate,
    false_negative_verdicts,
)
from stages.registry import get_stage_class
from stages.scoring import ModelParams
from tests.stages.negative_rows import by_id, shapes_record, shapes_table, write_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def embedder(tiny_clip: Path) -> ClipEmbedder:
    return ClipEmbedder(ModelParams(checkpoint=str(tiny_clip)))


def world(root: Path) -> pa.Table:
    """o1, its augmented sibling (parent_id o1), a row sharing o1's image file, and two others."""
    records = [
        shapes_record(root, "o1", [("red", "circle", 60, 60, 30), ("blue", "square", 180, 110, 25)],
                      "A <box>red circle</box> and a <box>blue square</box>.",
                      captions=["The red circle is left of the blue square."]),
        shapes_record(root, "o1-aug0", [("blue", "square", 76, 110, 25), ("red", "circle", 196, 60, 30)],
                      "A <box>red circle</box> and a <box>blue square</box>.",
                      captions=["The red circle is right of the blue square."]),
        shapes_record(root, "o2", [("green", "triangle", 100, 100, 35)], "A <box>green triangle</box>.",
                      captions=["One shape: a large green triangle."]),
        shapes_record(root, "o3", [("yellow", "circle", 120, 90, 20)], "A <box>yellow circle</box>."),
    ]
    copy = dict(records[0], id="o1-copy", content="<|image_start|><|image_pad|><|image_end|> Shapes on paper.",
                captions=["Two shapes on paper."])
    table = shapes_table(root, [*records, copy])
    parent = table.schema.get_field_index("parent_id")
    return table.set_column(parent, "parent_id", pa.array([None, "o1", None, None, None], pa.string()))


def text_negative(anchor: dict, rid: str, text: str, positive: str) -> dict:
    return {**anchor, "id": rid, "parent_id": anchor["id"], "negative_type": "replace_colour",
            "negative_text": text, "positive_text": positive}


def with_rows(table: pa.Table, extra: list[dict]) -> pa.Table:
    extra_table = pa.Table.from_pylist(extra, schema=table.schema)
    return pa.concat_tables([table, extra_table])


def expected_verdicts(rows: list[dict], rules: FilterRules, same: list[bool], dup: list[bool], cap: int) -> list[str]:
    s_neg = np.array([r["negative_similarity"] for r in rows])
    s_pos = np.array([r["positive_similarity"] for r in rows])
    v = false_negative_verdicts(s_neg, s_pos, np.array(same), np.array(dup), rules)
    side = ["text" if r["negative_text"] else "image" for r in rows]
    keys = [(r["parent_id"], r["positive_text"], s) for r, s in zip(rows, side, strict=True)]
    return cap_per_positive(keys, s_neg, v, cap).tolist()


def test_drops_same_image_captions_and_near_duplicates(tmp_path: Path, tiny_clip: Path,
                                                       embedder: ClipEmbedder) -> None:
    stage = NegativesFilter({"checkpoint": str(tiny_clip), "mine_k": 16, "ratio": 1.0, "ceiling": 1.0})
    table = world(tmp_path)
    table = conform(table, stage.output_schema(table.schema))
    o1 = table.to_pylist()[0]
    negatives = [
        text_negative(o1, "o1-txneg0", "the red circle and the blue square", "A red circle and a blue square."),
        text_negative(o1, "o1-txneg1", "A red disc and a blue square.", "A red circle and a blue square."),
        text_negative(o1, "o1-txneg2", "A green circle and a blue square.", "A red circle and a blue square."),
    ]
    out = stage(with_rows(table, negatives))
    rows = by_id(out)
    # Anchors pass unchanged; the three text negatives were scored in place; mined rows follow.
    assert [r["id"] for r in out.to_pylist()[:8]] == ["o1", "o1-aug0", "o2", "o3", "o1-copy", "o1-txneg0",
                                                       "o1-txneg1", "o1-txneg2"]
    for rid in ("o1", "o1-aug0", "o2", "o3", "o1-copy"):
        assert rows[rid]["status"] == "ok" and rows[rid]["negative_verdict"] is None
    for rid in ("o1-txneg0", "o1-txneg1"):
        assert (rows[rid]["status"], rows[rid]["reject_code"], rows[rid]["negative_verdict"]) == (
            "rejected", str(ReasonCode.HARD_NEG), "duplicate")
        assert rows[rid]["reject_detail"].startswith("likely false negative: near-duplicate of a positive caption")
    mined = [r for r in out.to_pylist() if r["negative_type"] == "mined_text"]
    assert {r["parent_id"] for r in mined} == {"o1", "o1-aug0", "o2", "o3", "o1-copy"}
    for r in mined:
        assert r["negative_source_id"] != r["parent_id"]  # a sample's own captions are not candidates
        assert r["id"].startswith(r["parent_id"] + "-mneg")
        assert r["negative_text"] in positive_captions(rows[r["negative_source_id"]])
    o1_family = {"o1", "o1-aug0", "o1-copy"}
    same = [r for r in mined if r["parent_id"] in o1_family and r["negative_source_id"] in o1_family]
    # o1-aug0 is o1's augmented sibling, o1-copy shows o1's very image file: never negatives of o1.
    assert {(r["parent_id"], r["negative_source_id"]) for r in same} == {
        (a, b) for a in o1_family for b in o1_family if a != b}
    for r in same:
        assert (r["status"], r["reject_code"], r["negative_verdict"]) == ("rejected", str(ReasonCode.HARD_NEG),
                                                                          "same_sample")
        assert "same image or augmented sibling" in r["reject_detail"]
    # Scores are the model's cosines: negative text vs the anchor image, lowest caption vs the image.
    image = embedder.embed_images([Image.open(tmp_path / "media" / "o1.png")])[0]
    caps = embedder.embed_texts(positive_captions(o1))
    neg = embedder.embed_texts(["A green circle and a blue square."])[0]
    assert rows["o1-txneg2"]["negative_similarity"] == pytest.approx(float(neg @ image), abs=1e-5)
    assert rows["o1-txneg2"]["positive_similarity"] == pytest.approx(float((caps @ image).min()), abs=1e-5)
    # Every verdict is what the rules say of the recorded scores; the rate counts the FN drops.
    cands = [rows[f"o1-txneg{i}"] for i in range(3)] + mined
    same_flags = [False] * 3 + [r in same for r in mined]
    dup_flags = [True, True, False] + [False] * len(mined)
    assert [r["negative_verdict"] for r in cands] == expected_verdicts(cands, FilterRules(1.0, 1.0), same_flags,
                                                                       dup_flags, 2)
    for r in cands:
        assert (r["status"] == "ok") == (r["negative_verdict"] == KEPT)
    fn = sum(r["negative_verdict"] in FALSE_NEGATIVE_VERDICTS for r in cands)
    assert false_negative_rate(out) == pytest.approx(fn / len(cands))
    assert [r["negative_batch_fn_rate"] for r in cands] == [pytest.approx(fn / len(cands))] * len(cands)


def test_reuses_clip_image_emb_of_the_same_checkpoint(tmp_path: Path, tiny_clip: Path,
                                                      embedder: ClipEmbedder) -> None:
    table = world(tmp_path).slice(2, 1)  # o2
    stage = NegativesFilter({"checkpoint": str(tiny_clip), "mine_k": 0})
    schema = stage.output_schema(table.schema)
    emb_type = pa.list_(pa.list_(pa.float16()))
    o2 = table.to_pylist()[0]
    fake = np.zeros(32, np.float16)
    fake[0] = 1.0
    anchor = {**o2, "clip_image_emb": [fake.tolist()], "clip_model": f"{tiny_clip}@unpinned"}
    negative = text_negative(anchor, "o2-txneg0", "A red triangle.", "A green triangle.")
    schema = schema.append(pa.field("clip_image_emb", emb_type)).append(pa.field("clip_model", pa.string()))
    out = by_id(stage(pa.Table.from_pylist([anchor, negative], schema=schema)))
    text = embedder.embed_texts(["A red triangle."])[0]
    assert out["o2-txneg0"]["negative_similarity"] == pytest.approx(float(text[0]), abs=1e-5)


def test_scores_image_side_negatives_against_their_caption(tmp_path: Path, tiny_clip: Path,
                                                           embedder: ClipEmbedder) -> None:
    table = world(tmp_path).slice(2, 1)
    made = NegativesImage({"media_out": str(tmp_path / "neg")})(table)
    broken = {**made.to_pylist()[1], "id": "o2-imneg9", "negative_media": str(tmp_path / "missing.png")}
    temporal = {**made.to_pylist()[0], "id": "o2-tneg000", "parent_id": "o2", "negative_type": "temporal_shift"}
    out = NegativesFilter({"checkpoint": str(tiny_clip), "mine_k": 0})(
        pa.concat_tables([made, pa.Table.from_pylist([broken, temporal], schema=made.schema)]))
    rows = by_id(out)
    neg = rows["o2-imneg0"]
    caption = embedder.embed_texts([neg["positive_text"]])[0]
    edited = embedder.embed_images([Image.open(neg["negative_media"])])[0]
    original = embedder.embed_images([Image.open(tmp_path / "media" / "o2.png")])[0]
    assert neg["negative_similarity"] == pytest.approx(float(edited @ caption), abs=1e-5)
    assert neg["positive_similarity"] == pytest.approx(float(original @ caption), abs=1e-5)
    assert neg["negative_verdict"] in ("kept", "positive_aware")
    assert (rows["o2-imneg9"]["status"], rows["o2-imneg9"]["reject_code"]) == ("rejected", str(ReasonCode.MEDIA))
    assert rows["o2-imneg9"]["reject_detail"].startswith("negative image unreadable: FileNotFoundError")
    assert (rows["o2-tneg000"]["status"], rows["o2-tneg000"]["negative_verdict"]) == ("ok", None)


def test_mines_the_whole_dataset_bank(tmp_path: Path, tiny_clip: Path, embedder: ClipEmbedder) -> None:
    table = world(tmp_path)
    texts, ids, roots = [], [], []
    for row in table.to_pylist():
        for caption in positive_captions(row):
            texts.append(caption)
            ids.append(row["id"])
            roots.append(row["parent_id"] or row["id"])
    emb = embedder.embed_texts(texts).astype(np.float16)
    bank = pa.table({"id": ids, "root_id": roots, "image_key": [None] * len(ids), "text": texts,
                     "embedding": pa.array(list(emb), pa.list_(pa.float16()))})
    pq.write_table(bank.replace_schema_metadata({"clip_model": f"{tiny_clip}@unpinned"}), tmp_path / "bank.parquet")
    stage = NegativesFilter({"checkpoint": str(tiny_clip), "mine_k": 3, "bank_path": str(tmp_path / "bank.parquet")})
    out = stage(table.slice(0, 1))  # o1 alone in its batch still mines from every sample
    mined = out.to_pylist()[1:]
    assert [r["id"] for r in mined] == ["o1-mneg0", "o1-mneg1", "o1-mneg2"]
    image = embedder.embed_images([Image.open(tmp_path / "media" / "o1.png")])[0]
    others = [(float(e.astype(np.float32) @ image), i) for i, e in enumerate(emb) if ids[i] != "o1"]
    best = [ids[i] for _, i in sorted(others, reverse=True)[:3]]
    assert [r["negative_source_id"] for r in mined] == best
    for r in mined:
        assert (r["negative_verdict"] == "same_sample") == (r["negative_source_id"] == "o1-aug0")
    pq.write_table(bank.replace_schema_metadata({"clip_model": "other@unpinned"}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="was embedded by other@unpinned"):
        NegativesFilter({"checkpoint": str(tiny_clip), "bank_path": str(tmp_path / "bad.parquet")})(table)


def test_missing_checkpoint_fails_when_params_are_read(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not found"):
        NegativesFilter({"checkpoint": str(tmp_path / "nope")})
    assert get_stage_class("negatives_filter") is NegativesFilter
