"""The dataset-level check functions on rows built here: template captions keep their
best-scoring ``max_uses`` uses, near-duplicates keep one representative by the documented rule
and name it, leakage names the evaluation set and row, and no step compares every row with every
other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.run.dataset_checks import dataset_checks_local, iter_groups
from schemas.reason_codes import ReasonCode
from stages.caption_templates import TEMPLATE_DETAIL_RE, explode_texts, normalise_caption, template_verdicts
from stages.dataset_checks import DatasetCheckError, DatasetChecksParams, emb_field, signatures
from stages.dataset_verdicts import apply_verdicts, merge_verdicts, verdict_lookup, verdict_table
from stages.near_duplicates import EvalIndex, band_buckets, duplicate_verdicts, leakage_verdicts

DIM = 32
MEDIA = pa.list_(pa.struct([("modality", pa.string()), ("uri", pa.string()),
                            ("width", pa.int64()), ("height", pa.int64())]))


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A copy of ``v`` at cosine about 0.99."""
    return unit(v + noise * rng.standard_normal(v.shape) / np.sqrt(v.size) * np.linalg.norm(v))


def make_rows(items: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows with the columns the checks read: id, kind, status, parent_id, source_ref, content,
    captions, media (one image of ``side`` x ``side`` px), ``emb`` and ``score``."""
    n = len(items)
    return pa.table({
        "id": [r["id"] for r in items],
        "kind": [r.get("kind", "object") for r in items],
        "status": [r.get("status", "ok") for r in items],
        "parent_id": pa.array([r.get("parent_id") for r in items], pa.string()),
        "source_ref": [f"m.jsonl:{i + 1}" for i in range(n)],
        "content": [r.get("content", f"caption of {r['id']}") for r in items],
        "captions": pa.array([r.get("captions", []) for r in items], pa.list_(pa.string())),
        "media": pa.array([[{"modality": "image", "uri": f"/m/{r['id']}.png", "width": r.get("side", 64),
                             "height": r.get("side", 64)}] for r in items], MEDIA),
        "emb": pa.array([[np.asarray(r["emb"], np.float16).tolist()] for r in items],
                        pa.list_(pa.list_(pa.float16()))),
        "score": pa.array([r.get("score") for r in items], pa.float64()),
        "reject_stage": pa.array([None] * n, pa.string()),
        "reject_code": pa.array([None] * n, pa.string()),
        "reject_detail": pa.array([None] * n, pa.string()),
    })


def params(**kw: Any) -> DatasetChecksParams:
    base: dict[str, Any] = {"after": "x", "score_column": "score", "templates": {"embedding_column": "emb"},
                            "duplicates": {"embedding_column": "emb"}, "leakage": {"embedding_column": "emb"}}
    for key, value in kw.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return DatasetChecksParams.model_validate(base)


def rejected(rows: pa.Table) -> dict[str, tuple[str, str]]:
    return {r["id"]: (r["reject_code"], r["reject_detail"]) for r in rows.to_pylist() if r["status"] != "ok"}


def test_a_caption_is_folded_by_case_whitespace_numbers_and_markup() -> None:
    a = normalise_caption("<|image_start|><IMG_TK_5><|image_end|> The <box>Red Circle</box>  is left of 2 squares.")
    assert a == normalise_caption("the red circle is left of 17 SQUARES") == "the red circle is left of # squares"
    assert normalise_caption("  ...  ") is None and normalise_caption(None) is None


def test_a_template_keeps_its_best_scoring_max_uses_and_names_them() -> None:
    rng = np.random.default_rng(0)
    scenes = [unit(rng.standard_normal(DIM)) for _ in range(8)]
    scores = rng.permutation(8) / 10
    spelled = ["A red circle left of 2 squares.", "a red  circle left of 3 squares", "A RED circle left of 9 squares"]
    items = [{"id": f"t{i}", "content": spelled[i % 3], "emb": scenes[i], "score": float(scores[i])} for i in range(8)]
    # a re-encoded copy of the best use is the same use, not a new one (the duplicate check's job)
    best = int(np.argmax(scores))
    items.append({"id": "t-copy", "content": spelled[0], "emb": near(scenes[best], rng), "score": 0.0})
    items += [{"id": f"other{i}", "content": f"a blue square {w}", "emb": unit(rng.standard_normal(DIM)),
               "score": 0.5} for i, w in enumerate(["here", "there", "up", "down"])]
    out, summary = dataset_checks_local(make_rows(items), params(templates={"max_uses": 3},
                                                                 duplicates={"enabled": False}))
    by_score = sorted(range(8), key=lambda i: -scores[i])
    kept, dropped = {f"t{i}" for i in by_score[:3]}, {f"t{i}" for i in by_score[3:]}
    got = rejected(out)
    assert set(got) == dropped
    for code, detail in got.values():
        assert code == ReasonCode.TEMPLATE
        match = TEMPLATE_DETAIL_RE.match(detail)
        assert match and match.group(1) == '"a red circle left of # squares"' and match.group(2) == "9"
        assert all(k in detail for k in kept)
    assert summary["rejected"] == {"template": 5, "duplicate": 0, "leakage": 0}
    (top,) = summary["templates"]
    assert (top["caption"], top["rows"], top["rejected"], set(top["kept"])) == (
        "a red circle left of # squares", 9, 5, kept)
    assert len(top["images"]) == 4 and all(i.startswith("/m/t") for i in top["images"])


def test_uses_within_max_uses_or_of_one_scene_are_no_template() -> None:
    rng = np.random.default_rng(1)
    scene = unit(rng.standard_normal(DIM))
    same_scene = [{"id": f"s{i}", "content": "one sentence", "emb": near(scene, rng), "score": 0.1 * i}
                  for i in range(10)]
    few = [{"id": f"f{i}", "content": "another sentence", "emb": unit(rng.standard_normal(DIM)), "score": 0.5}
           for i in range(3)]
    out, _ = dataset_checks_local(make_rows(same_scene + few), params(templates={"max_uses": 3},
                                                                      duplicates={"enabled": False}))
    assert rejected(out) == {}


def test_template_work_is_rows_times_max_uses() -> None:
    """A group's rows are compared with its kept uses only: a 5,000-row group of distinct scenes
    costs 5,000 x max_uses cosines, not 5,000 squared (which would not fit this test's time)."""
    rng = np.random.default_rng(2)
    n = 5000
    emb = rng.standard_normal((n, DIM))
    items = [{"id": f"r{i:05d}", "content": "same words", "emb": unit(emb[i]), "score": float(i)} for i in range(n)]
    sig = signatures(make_rows(items), params())
    (group,) = list(iter_groups(explode_texts(sig, emb_field("emb"), "content"), "key"))
    verdicts = template_verdicts(group, max_uses=4, distinct_below=0.95)
    assert verdicts.num_rows == n - 4
    kept = {r["id"] for r in items} - {ref.split("\x1f")[0] for ref in verdicts["ref"].to_pylist()}
    assert kept == {f"r{i:05d}" for i in range(n - 4, n)}  # the four best scores


def _dup_verdicts(rows: pa.Table, p: DatasetChecksParams) -> tuple[pa.Table, list[int]]:
    sig = signatures(rows, p)
    d = p.duplicates
    buckets = band_buckets(sig, emb_field("emb"), None, d.bands, d.bits, d.seed)
    groups = list(iter_groups(buckets, "bucket"))
    tables = [duplicate_verdicts(g, d.threshold, None, d.max_block_rows, d.seed) for g in groups]
    return merge_verdicts(tables), [g.num_rows for g in groups]


def test_near_duplicates_keep_the_larger_image_then_the_higher_score_then_the_smaller_id() -> None:
    rng = np.random.default_rng(3)
    v = unit(rng.standard_normal(DIM))
    group = [{"id": "d1", "side": 60, "score": 0.3}, {"id": "d0", "side": 60, "score": 0.3},
             {"id": "d2", "side": 60, "score": 0.9}, {"id": "d3", "side": 64, "score": 0.0}]
    cases = [(group, "d3"), (group[:3], "d2"), (group[:2], "d0")]
    for members, winner in cases:
        items = [{**m, "emb": near(v, rng)} for m in members]
        out, summary = dataset_checks_local(make_rows(items), params(templates={"enabled": False}))
        got = rejected(out)
        assert set(got) == {m["id"] for m in members} - {winner}
        for code, detail in got.values():
            assert code == ReasonCode.DUPLICATE and detail.startswith(f"near-duplicate of {winner} ")
            assert f"{winner} is kept" in detail
        assert summary["rejected"]["duplicate"] == len(members) - 1


def test_near_duplicates_are_found_in_blocks_never_all_pairs() -> None:
    rng = np.random.default_rng(4)
    n, copies = 5000, 200
    emb = rng.standard_normal((n, DIM))
    items = [{"id": f"r{i:05d}", "emb": unit(emb[i]), "score": 0.5} for i in range(n)]
    items += [{"id": f"c{i:05d}", "emb": near(unit(emb[i]), rng, 0.03), "score": 0.5, "side": 60}
              for i in range(copies)]
    p = params(templates={"enabled": False})
    verdicts, sizes = _dup_verdicts(make_rows(items), p)
    found = {ref.split("\x1f")[0]: detail for ref, detail in
             zip(verdicts["ref"].to_pylist(), verdicts["detail"].to_pylist(), strict=True)}
    missed = [i for i in range(copies) if not found.get(f"c{i:05d}", "").startswith(f"near-duplicate of r{i:05d} ")]
    assert len(missed) <= copies // 50  # LSH: 97% per pair at cosine 0.95, these are closer
    assert not [k for k in found if k.startswith("r")]  # random vectors are never near
    total = n + copies
    assert max(sizes) <= p.duplicates.max_block_rows
    assert sum(s * s for s in sizes) < total * total / 50  # cosines computed, all bands together


def test_an_oversized_bucket_is_cut_and_compared_in_windows() -> None:
    rng = np.random.default_rng(5)
    centre = unit(rng.standard_normal(DIM))
    # 600 rows in one tight cone: they share most band keys, and the split cuts them into pieces
    items = [{"id": f"k{i:03d}", "emb": near(centre, rng, 0.6), "score": float(i)} for i in range(600)]
    p = params(templates={"enabled": False}, duplicates={"max_block_rows": 64, "threshold": 0.999})
    sig = signatures(make_rows(items), p)
    buckets = band_buckets(sig, emb_field("emb"), None, 8, 2, 0)  # 2 bits: 4 buckets a band
    largest = max(iter_groups(buckets, "bucket"), key=lambda g: g.num_rows)
    assert largest.num_rows > 64
    from stages.near_duplicates import _split

    pieces = _split(largest, 64, 0)
    sizes = [p.num_rows for p in pieces]
    assert sum(sizes) == largest.num_rows and len(sizes) > 4
    # a piece the cuts could not separate compares each row with its 64 best-ranked rows only
    n = largest.num_rows
    assert sum(s * min(s, 64) for s in sizes) < n * n / 5


def test_leakage_names_the_evaluation_set_and_row() -> None:
    rng = np.random.default_rng(6)
    eval_emb = np.stack([unit(rng.standard_normal(DIM)) for _ in range(20)])
    index = EvalIndex("heldout", ids=[f"e{i}" for i in range(20)], emb=eval_emb.astype(np.float32),
                      texts={normalise_caption("a small red circle above a large blue square") or "": "e7"})
    items = [{"id": "leak-image", "emb": near(eval_emb[3], rng), "score": 0.5},
             {"id": "leak-caption", "content": "A small red circle above a LARGE blue square.",
              "emb": unit(rng.standard_normal(DIM)), "score": 0.5},
             {"id": "short", "content": "a red circle", "emb": unit(rng.standard_normal(DIM))},
             {"id": "clean", "emb": unit(rng.standard_normal(DIM))}]
    sig = signatures(make_rows(items), params())
    verdicts = leakage_verdicts(sig, [EvalIndex("empty"), index], emb_field("emb"), 0.95, 6)
    got = dict(zip([r.split("\x1f")[0] for r in verdicts["ref"].to_pylist()], verdicts["detail"].to_pylist(),
                   strict=True))
    assert set(got) == {"leak-image", "leak-caption"}
    assert got["leak-image"].startswith("near-duplicate of evaluation row e3 of evaluation set 'heldout'")
    assert "evaluation row e7 of evaluation set 'heldout'" in got["leak-caption"]
    assert set(verdicts["code"].to_pylist()) == {ReasonCode.DUPLICATE}


def test_one_verdict_per_row_by_priority_and_rows_only_rejected() -> None:
    refs = ["a\x1fm.jsonl:1", "b\x1fm.jsonl:2"]
    merged = merge_verdicts([
        verdict_table(refs, "template", ReasonCode.TEMPLATE, ["t", "t"]),
        verdict_table(refs[:1], "duplicate", ReasonCode.DUPLICATE, ["near-duplicate of z"], [(1, 0.1, "z")]),
        verdict_table(refs[:1], "duplicate", ReasonCode.DUPLICATE, ["near-duplicate of y"], [(9, 0.1, "y")]),
        verdict_table(refs[1:], "leakage", ReasonCode.DUPLICATE, ["evaluation row"]),
    ])
    lookup = verdict_lookup(merged)
    assert lookup == {refs[0]: (ReasonCode.DUPLICATE, "near-duplicate of y"),  # the higher-ranked kept row
                      refs[1]: (ReasonCode.DUPLICATE, "evaluation row")}
    rows = make_rows([{"id": "a", "emb": np.ones(DIM)}, {"id": "b", "emb": np.ones(DIM), "status": "rejected"},
                      {"id": "a", "emb": np.ones(DIM), "parent_id": "a"}])
    out = apply_verdicts(rows, lookup)
    assert out.num_rows == 3
    assert out["status"].to_pylist() == ["rejected", "rejected", "ok"]
    assert out["reject_stage"].to_pylist() == ["dataset_checks", None, None]


def test_a_missing_column_names_the_setting() -> None:
    rows = make_rows([{"id": "a", "emb": np.ones(DIM)}])
    with pytest.raises(DatasetCheckError, match=r"dataset_checks.duplicates.embedding_column: 'clip_image_emb'"):
        signatures(rows, params(templates={"enabled": False}, duplicates={"embedding_column": "clip_image_emb"}))
