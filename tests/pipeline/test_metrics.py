"""Release metrics: recall cross-checked against independent implementations (a plain-Python
sort, and clip-benchmark's own retrieval metric when installed), distributions, caption-pair
conflicts, and the wiring from table columns to metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.metrics.entailment import caption_claims, image_conflicts
from pipeline.metrics.release import compute_release_metrics
from pipeline.metrics.retrieval import batched_recall, distribution, retrieval_ranks, retrieval_recall
from pipeline.release.writer import reconcile
from pipeline.run.config import MetricsConfig
from schemas.records import ROW_SCHEMA


# ---- an independent reference: sort every candidate list in plain Python ---------------------
def reference_recall(images: np.ndarray, texts: np.ndarray, owner: list[int], k: int) -> tuple[float, float]:
    """R@k both ways by sorting, ties placed against the match (the true item sorts last among
    equals), written without the vectorised counting of ``retrieval_ranks``."""
    img = [v / np.linalg.norm(v) for v in images.astype(np.float64)]
    txt = [v / np.linalg.norm(v) for v in texts.astype(np.float64)]
    i2t_hits = 0
    for i, vi in enumerate(img):
        mine = {t for t, o in enumerate(owner) if o == i}
        ranked = sorted(range(len(txt)), key=lambda t: (-float(np.dot(vi, txt[t])), t in mine))
        best = max(float(np.dot(vi, txt[t])) for t in mine)
        # the best caption's position among the non-captions plus itself
        others_above = [t for t in ranked if t not in mine and float(np.dot(vi, txt[t])) >= best]
        i2t_hits += len(others_above) + 1 <= k
    t2i_hits = 0
    for t, vt in enumerate(txt):
        ranked = sorted(range(len(img)), key=lambda i: (-float(np.dot(vt, img[i])), i == owner[t]))
        t2i_hits += ranked.index(owner[t]) < k
    return i2t_hits / len(img), t2i_hits / len(txt)


def ternary(rng: np.random.Generator, n: int, dim: int = 12, nonzero: int = 4) -> np.ndarray:
    """Vectors of four +-1 entries: every cosine is a multiple of 1/4, exact in float32, and
    ties are frequent, so the tie rule is exercised and rounding cannot flip a rank."""
    out = np.zeros((n, dim), dtype=np.float32)
    for row in out:
        idx = rng.choice(dim, size=nonzero, replace=False)
        row[idx] = rng.choice([-1.0, 1.0], size=nonzero)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_img=st.integers(2, 25), k=st.sampled_from([1, 5, 10]))
def test_recall_matches_a_plain_sort_including_ties(seed: int, n_img: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 5, size=n_img)  # one to four captions per image
    owner = np.repeat(np.arange(n_img), per_image)
    images, texts = ternary(rng, n_img), ternary(rng, len(owner))
    recall = retrieval_recall(images, texts, owner, ks=(k,))
    want_i2t, want_t2i = reference_recall(images, texts, owner.tolist(), k)
    assert recall.image_to_text[f"r@{k}"] == pytest.approx(want_i2t)
    assert recall.text_to_image[f"r@{k}"] == pytest.approx(want_t2i)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_clip_benchmark(seed: int) -> None:
    """clip-benchmark's zero-shot retrieval metric (``recall_at_k`` + ``batchify``, as its
    ``evaluate`` calls them) on the same float16 embeddings."""
    torch = pytest.importorskip("torch")
    zr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval",
                             reason="clip-benchmark not installed (pip install --no-deps clip-benchmark==1.6.2)")
    rng = np.random.default_rng(seed)
    n_img, dim = 60, 32
    owner = np.repeat(np.arange(n_img), rng.integers(1, 6, size=n_img))
    centres = rng.normal(size=(n_img, dim))
    images = (centres + rng.normal(scale=1.2, size=centres.shape)).astype(np.float16)
    texts = (centres[owner] + rng.normal(scale=1.2, size=(len(owner), dim))).astype(np.float16)
    ours = retrieval_recall(images, texts, owner, ks=(1, 5, 10))

    img_t = torch.nn.functional.normalize(torch.from_numpy(images.astype(np.float32)), dim=-1)
    txt_t = torch.nn.functional.normalize(torch.from_numpy(texts.astype(np.float32)), dim=-1)
    scores = txt_t @ img_t.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.from_numpy(owner)] = True
    for k in (1, 5, 10):
        t2i = (zr.batchify(zr.recall_at_k, scores, positive, 16, "cpu", k=k) > 0).float().mean().item()
        i2t = (zr.batchify(zr.recall_at_k, scores.T, positive.T, 16, "cpu", k=k) > 0).float().mean().item()
        assert ours.text_to_image[f"r@{k}"] == pytest.approx(t2i, abs=1e-6)
        assert ours.image_to_text[f"r@{k}"] == pytest.approx(i2t, abs=1e-6)
    assert 0.2 < ours.image_to_text["r@1"] < 1.0  # a non-trivial case, not all hits or all misses


def test_hand_computed_ranks() -> None:
    images = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    texts = np.array([[1, 0.1], [0.1, 1], [0, 1], [1, -0.2]], dtype=np.float32)
    owner = np.array([0, 1, 2, 2])
    i2t, t2i = retrieval_ranks(images, texts, owner)
    # image 1 (0, 1): its caption scores 0.995, image 2's caption (0, 1) scores 1 -> rank 2.
    # image 2 (-1, 0): its best caption (0, 1) scores 0, every other caption is negative -> 1.
    assert i2t.tolist() == [1, 2, 1]
    # text 2 (0, 1) scores 0 with its image 2 and also 0 with image 0 (a tie, counted against
    # the match), 1 with image 1 -> rank 3; text 3 (1, -0.2) is nearest images 0 and 1 -> 3.
    assert t2i.tolist() == [1, 1, 3, 3]


def test_degenerate_embeddings_score_chance_not_perfect() -> None:
    images, texts = np.ones((10, 4)), np.ones((10, 4))  # every pair ties
    recall = retrieval_recall(images, texts, np.arange(10))
    assert recall.text_to_image["r@1"] == 0.0 and recall.image_to_text["r@1"] == 0.0
    assert recall.text_to_image["r@10"] == 1.0


def test_per_batch_recall_is_recall_inside_each_pool() -> None:
    rng = np.random.default_rng(3)
    owner = np.repeat(np.arange(30), 2)
    images, texts = rng.normal(size=(30, 8)), rng.normal(size=(60, 8))
    batches = batched_recall(images, texts, owner, batch_images=20)
    assert [b.images for b in batches] == [20, 10]
    second = retrieval_recall(images[20:], texts[40:], owner[40:] - 20)
    assert batches[1] == second


def test_recall_rejects_an_image_without_text() -> None:
    with pytest.raises(ValueError, match="at least one text"):
        retrieval_ranks(np.eye(3), np.eye(3)[:2], np.array([0, 1]))


def test_distribution_counts_non_finite_values_apart() -> None:
    d = distribution([0.0, 0.5, 1.0, float("nan"), float("inf")], bins=2, value_range=(0, 1))
    assert d["count"] == 3 and d["non_finite"] == 2
    assert d["median"] == 0.5 and d["histogram"]["counts"] == [1, 2]


# ---- caption-pair conflicts ----------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "kind"), [
    ("A red circle on the left of a blue square.", "The circle is blue.", "colour"),
    ("Two circles and a square.", "Three circles.", "count"),
    ("The circle is left of the square.", "The square is left of the circle.", "relation"),
    ("The circle is left of the square.", "The circle is to the right of the square.", "relation"),
    ("The cup is on the table.", "The cup is under the table.", "relation"),
    ("A dog above the bench.", "The dog is below the bench.", "relation"),
    ("A dog in front of the car.", "The dog is behind the car.", "relation"),
    ("A star on the left.", "A star on the right.", "position"),
    ("There is no dog.", "A puppy sleeps.", "presence"),
])
def test_each_kind_of_conflict_is_found(a: str, b: str, kind: str) -> None:
    found = image_conflicts("img", [a, b], [])
    assert found.conflicting_pairs == 1 and set(found.pairs_by_type) == {kind}
    assert found.examples[0]["caption_a"] == a and found.examples[0]["type"] == kind


@pytest.mark.parametrize("captions", [
    ["Three: a small red circle, a large blue square and a small green triangle.",
     "The red circle is left of the blue square.", "The triangle is below the square."],
    ["A grey cat.", "A gray kitten sits on the sofa."],  # spelling and synonym agree
    ["Two small circles.", "Three circles."],  # different modifiers: a subset may be small
    ["The circle is not left of the square.", "The square is left of the circle."],
    ["A bright circle on the right.", "The circle is on the right side."],  # "bright" is not "right"
])
def test_agreeing_captions_are_not_conflicts(captions: list[str]) -> None:
    assert image_conflicts("img", captions, []).conflicting_pairs == 0


def test_an_object_seen_twice_is_ambiguous_for_colour_but_not_for_count() -> None:
    captions = ["A red circle.", "A blue circle.", "Two circles.", "Three circles."]
    found = image_conflicts("img", captions, ["red circle", "blue circle"])
    assert set(found.pairs_by_type) == {"count"}
    alone = image_conflicts("img", captions[:2], ["red circle"])
    assert set(alone.pairs_by_type) == {"colour"}


def test_pair_and_image_rates() -> None:
    table = rows([
        {"id": "a", "content": "A red circle.", "captions": ["A blue circle.", "A circle."]},
        {"id": "b", "content": "A red circle.", "captions": ["The circle is red."]},
        {"id": "c", "content": "A red circle."},  # one caption: no pair
    ])
    m = compute_release_metrics(table, reconcile(table, 3), [])
    e = m.values["entailment"]
    # a: 3 pairs, only red/blue conflicts ("A circle." says no colour); b: 1 pair that agrees
    assert (e["images"], e["pairs"], e["conflicting_pairs"], e["conflicting_images"]) == (2, 4, 1, 1)
    assert e["pair_conflict_rate"] == 0.25 and e["image_conflict_rate"] == 0.5


def test_claims_of_one_caption() -> None:
    c = caption_claims("Two red circles to the left of a square; no dog.")
    assert c.counts == {("circle", frozenset({"red"})): 2}
    assert ("circle", "left", "square") in c.relations
    assert c.absent == {"dog"} and "circle" not in c.colours  # plural: colour of which one?


# ---- from table columns ------------------------------------------------------------------
def rows(specs: list[dict]) -> pa.Table:
    """ROW_SCHEMA rows (object kind, ok) with any extra columns given in the specs."""
    base = []
    for s in specs:
        base.append({"id": s["id"], "kind": s.get("kind", "object"), "content": s.get("content", "x"),
                     "captions": s.get("captions"), "boxes": s.get("boxes"), "status": s.get("status", "ok"),
                     "reject_code": s.get("reject_code"), "reject_stage": s.get("reject_stage"),
                     "parent_id": s.get("parent_id"), "source": "t", "license": "CC0-1.0"})
    table = pa.Table.from_pylist(base, schema=ROW_SCHEMA)
    extra = {k for s in specs for k in s} - set(ROW_SCHEMA.names)
    for name in sorted(extra):
        values = [s.get(name) for s in specs]
        table = table.append_column(name, pa.array(values, type=EXTRA_TYPES.get(name)))
    return table


EXTRA_TYPES = {
    "image_embedding": pa.list_(pa.float16()),
    "text_embedding": pa.list_(pa.float16()),
    "caption_embeddings": pa.list_(pa.list_(pa.float16())),
    "continuity_tau": pa.float64(),
    "negative_type": pa.string(),
    "negative_similarity": pa.float32(),
    "negative_verdict": pa.string(),
    "negative_batch": pa.string(),
}


def test_recall_from_float16_columns_with_several_captions_per_row() -> None:
    rng = np.random.default_rng(5)
    n, dim = 40, 16
    centres = rng.normal(size=(n, dim))
    noisy = lambda: (centres + rng.normal(scale=0.9, size=centres.shape)).astype(np.float16)  # noqa: E731
    img, txt, cap1, cap2 = noisy(), noisy(), noisy(), noisy()
    specs = [{"id": f"r{i:02d}", "image_embedding": img[i].tolist(), "text_embedding": txt[i].tolist(),
              "caption_embeddings": [cap1[i].tolist(), cap2[i].tolist()] if i % 2 else None}
             for i in range(n)]
    specs.append({"id": "rejected", "status": "rejected", "reject_code": "ERR_CROSS_MDL_LOW_SCORE",
                  "reject_stage": "clip_score", "image_embedding": img[0].tolist(), "text_embedding": txt[1].tolist()})
    table = rows(specs)
    m = compute_release_metrics(table, reconcile(table, n + 1), [], MetricsConfig(batch_images=25))
    # the same pool built by hand: content embedding first, then the captions, row by row
    texts, owner = [], []
    for i in range(n):
        texts.append(txt[i])
        owner.append(i)
        if i % 2:
            texts += [cap1[i], cap2[i]]
            owner += [i, i]
    want = retrieval_recall(img, np.array(texts), np.array(owner))
    r = m.values["retrieval"]
    assert (r["images"], r["texts"]) == (n, n + n // 2 * 2)
    assert r["image_to_text"] == want.image_to_text and r["text_to_image"] == want.text_to_image
    assert r["columns"] == {"image": "image_embedding", "text": ["text_embedding", "caption_embeddings"]}
    assert r["per_batch"]["batches"] == 2
    sim = m.values["similarity"]
    assert sim["kept"]["count"] == n and sim["rejected"]["count"] == 1
    assert m.plots.heatmap is not None and m.plots.heatmap.shape[0] == 12
    json.dumps(m.to_json())  # the manifest can hold it


def test_absent_inputs_are_skipped_with_a_reason() -> None:
    table = rows([{"id": "a"}, {"id": "b"}])
    m = compute_release_metrics(table, reconcile(table, 2), [])
    assert {"retrieval", "similarity", "continuity", "negatives", "hallucination"} <= set(m.skipped)
    assert "clip_score" in m.skipped["retrieval"]


def test_continuity_chair_and_negatives_from_their_columns() -> None:
    table = rows([
        {"id": "s1", "kind": "segment", "continuity_tau": 1.0},
        {"id": "s2", "kind": "segment", "continuity_tau": 0.5},
        {"id": "s3", "kind": "segment", "continuity_tau": None},
        {"id": "o1", "content": "A red circle and a green dog.", "captions": ["A red circle."],
         "boxes": [{"label": "red circle", "bbox": [0, 0, 1, 1], "format": "pascal_voc"}]},
        {"id": "n1", "kind": "segment", "parent_id": "s1", "negative_type": "temporal_shift",
         "negative_similarity": 0.2},
        {"id": "n2", "kind": "segment", "parent_id": "s1", "negative_type": "temporal_shift",
         "negative_similarity": 0.9, "status": "rejected", "reject_code": "ERR_CROSS_MDL_HARD_NEG",
         "reject_stage": "negatives"},
    ])
    m = compute_release_metrics(table, reconcile(table, 4), [("a", 10, 2.0)])
    assert m.values["continuity"]["count"] == 2 and m.values["continuity"]["median"] == 0.75
    h = m.values["hallucination"]
    assert (h["chair_i"], h["chair_s"]) == (pytest.approx(1 / 3), 0.5)  # "green dog" is not there
    n = m.values["negatives"]
    assert n["false_negative_rate"] == 0.5 and n["difficulty_kept"]["count"] == 1
    assert m.values["throughput"] == [{"stage": "a", "rows_in": 10, "seconds": 2.0, "rows_per_s": 5.0}]


def test_a_large_pool_is_sampled_by_id_whatever_the_row_order() -> None:
    rng = np.random.default_rng(11)
    n = 30
    vecs = rng.normal(size=(n, 8))
    noisy = (vecs + rng.normal(scale=1.0, size=vecs.shape)).astype(np.float16)
    specs = [{"id": f"r{i:02d}", "image_embedding": vecs[i].astype(np.float16).tolist(),
              "text_embedding": noisy[i].tolist()} for i in range(n)]
    cfg = MetricsConfig(recall_max_images=10)
    forward = rows(specs)
    backward = rows(specs[::-1])
    a = compute_release_metrics(forward, reconcile(forward, n), [], cfg).values["retrieval"]
    b = compute_release_metrics(backward, reconcile(backward, n), [], cfg).values["retrieval"]
    assert (a["images"], a["pool_images"]) == (10, 30)
    assert a["image_to_text"] == b["image_to_text"] and a["text_to_image"] == b["text_to_image"]
    assert a["image_to_text"]["r@1"] < 1.0  # not a trivial pool: the sample matters


@pytest.mark.slow
def test_metrics_read_the_clip_score_stage_columns(tmp_path: Path) -> None:
    """The real scorer's output (tiny random-init open_clip): ``clip_image_emb`` and
    ``clip_text_emb`` (lists of float16 vectors, content first then captions) and ``clip_score``."""
    pytest.importorskip("open_clip")
    clip_score = pytest.importorskip("stages.clip_score")
    from pipeline.run.local_runner import read_inputs, run_stages
    from pipeline.world import generate_world
    from stages.decode_media import DecodeMedia
    from tests.stages.tiny_models import CLIP_IMAGE_SIZE, write_tiny_open_clip

    generate_world(tmp_path / "w", n=16, fault_rate=0.0, seed=3)
    rows = read_inputs([str(tmp_path / "w" / "manifest.jsonl")], 4 << 20)
    stages = [DecodeMedia({"image_size": CLIP_IMAGE_SIZE, "audio": False, "video_frames": 2}),
              clip_score.ClipScore({"checkpoint": str(write_tiny_open_clip(tmp_path / "clip"))})]
    table = run_stages(rows, stages).table
    m = compute_release_metrics(table, reconcile(table, rows.num_rows), [])
    r = m.values["retrieval"]
    assert r["columns"] == {"image": "clip_image_emb", "text": ["clip_text_emb"]}
    objects = [x for x in table.to_pylist() if x["kind"] == "object" and x["status"] == "ok" and x["clip_image_emb"]]
    images = np.array([x["clip_image_emb"][0] for x in objects], dtype=np.float32)
    texts = np.array([t for x in objects for t in x["clip_text_emb"]], dtype=np.float32)
    owner = np.repeat(np.arange(len(objects)), [len(x["clip_text_emb"]) for x in objects])
    want = retrieval_recall(images, texts, owner)
    assert (r["images"], r["texts"]) == (len(objects), len(texts)) and r["images"] >= 4
    assert r["image_to_text"] == want.image_to_text and r["text_to_image"] == want.text_to_image
    assert m.values["similarity"]["source"] == "clip_score"


def test_false_negative_rate_follows_the_negatives_stage_verdicts() -> None:
    """Scored candidates only (a temporal shift is not scored); over_cap drops are true
    negatives in excess, not false negatives; the worst filter batch is kept for the gate."""
    hard = {"status": "rejected", "reject_code": "ERR_CROSS_MDL_HARD_NEG", "reject_stage": "negatives_filter"}
    neg = {"kind": "object", "parent_id": "a", "negative_type": "rule_text", "negative_similarity": 0.3}
    table = rows([
        {"id": "a"},
        {"id": "n1", **neg, "negative_verdict": "kept", "negative_batch": "b1"},
        {"id": "n2", **neg, **hard, "negative_verdict": "positive_aware", "negative_batch": "b1"},
        {"id": "n3", **neg, **hard, "negative_verdict": "over_cap", "negative_batch": "b2"},
        {"id": "n4", **neg, "negative_verdict": "kept", "negative_batch": "b2"},
        {"id": "n5", "kind": "segment", "parent_id": "a", "negative_type": "temporal_shift"},
    ])
    n = compute_release_metrics(table, reconcile(table, 1), []).values["negatives"]
    assert (n["rows"], n["scored"], n["false_negatives_dropped"]) == (5, 4, 2)
    assert n["false_negative_rate"] == 0.25 and n["false_negative_rate_worst_batch"] == 0.5
    assert n["by_verdict"] == {"kept": 2, "over_cap": 1, "positive_aware": 1}


def test_clean_vs_swapped_pairs_come_from_rule_made_text_negatives() -> None:
    """Each rule-made text negative against its clean caption on the same image; mined and
    temporal negatives are not injected mismatches and stay out."""
    neg = {"kind": "object", "parent_id": "a"}
    table = rows([
        {"id": "a"},
        {"id": "n1", **neg, "negative_type": "replace_colour", "positive_similarity": 0.6,
         "negative_similarity": 0.2},
        {"id": "n2", **neg, "negative_type": "swap_adjectives", "positive_similarity": 0.5,
         "negative_similarity": 0.55},
        {"id": "n3", **neg, "negative_type": "replace_size", "positive_similarity": 0.7,
         "negative_similarity": 0.4},
        {"id": "n4", **neg, "negative_type": "mined_text", "positive_similarity": 0.6,
         "negative_similarity": 0.9},
    ])
    m = compute_release_metrics(table, reconcile(table, 1), [])
    c = m.values["negatives"]["clean_vs_swapped"]
    assert c["pairs"] == 3 and c["swapped_below_clean"] == pytest.approx(2 / 3)
    assert c["clean"]["mean"] == pytest.approx(0.6) and c["swapped"]["max"] == pytest.approx(0.55)
    np.testing.assert_allclose(sorted(m.plots.swap_mismatched), [0.2, 0.4, 0.55])
