"""Blocked kNN top-k against brute force, the false-negative rules, the cap, and the FN rate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stages.negatives_mining import (
    CEILING,
    DUPLICATE,
    KEPT,
    MARGIN,
    OVER_CAP,
    POSITIVE_AWARE,
    SAME_SAMPLE,
    FilterRules,
    batch_false_negative_rates,
    cap_per_positive,
    drop_detail,
    false_negative_gate,
    false_negative_rate,
    false_negative_verdicts,
    lowest_positive,
    mine_topk,
    normalize_rows,
)


def brute_topk(q: np.ndarray, k_: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float32) @ k_.astype(np.float32).T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


@pytest.mark.parametrize(("qb", "kb"), [(7, 13), (1024, 16384), (1, 1)])
def test_blocked_topk_equals_brute_force_for_any_block_sizes(qb: int, kb: int) -> None:
    rng = np.random.default_rng(0)
    keys = normalize_rows(rng.standard_normal((300, 24))).astype(np.float16)
    queries = normalize_rows(rng.standard_normal((41, 24))).astype(np.float16)
    top = mine_topk(queries, keys, 5, query_block=qb, key_block=kb)
    scores, idx = brute_topk(queries, keys, 5)
    assert top.indices.shape == (41, 5) and top.scores.dtype == np.float32
    np.testing.assert_array_equal(top.indices, idx)
    np.testing.assert_allclose(top.scores, scores, rtol=0, atol=1e-6)


def test_owner_mask_excludes_own_keys_and_pads_when_too_few() -> None:
    keys = np.eye(4, dtype=np.float32)
    queries = np.array([[1, 0.5, 0, 0]], dtype=np.float32)
    top = mine_topk(queries, keys, 6, query_owner=[7], key_owner=[7, 1, 2, 7], key_block=3)
    assert top.indices[0].tolist() == [1, 2, -1, -1, -1, -1]
    assert top.scores[0, :2].tolist() == [0.5, 0.0]
    assert np.isneginf(top.scores[0, 2:]).all()


def test_topk_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be"):
        mine_topk(np.ones((1, 2)), np.ones((3, 2)), 0)
    with pytest.raises(ValueError, match=r"\(n, d\) and \(m, d\)"):
        mine_topk(np.ones((1, 2)), np.ones((3, 4)), 1)
    with pytest.raises(ValueError, match="both"):
        mine_topk(np.ones((1, 2)), np.ones((3, 2)), 1, query_owner=[0])


def test_lowest_positive_picks_the_weakest_caption() -> None:
    image = np.array([1.0, 0.0])
    captions = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    assert lowest_positive(image, captions) == (pytest.approx(0.3), 1)


def test_verdicts_follow_each_rule_and_their_order() -> None:
    rules = FilterRules(ratio=0.95, ceiling=0.75, margin=0.05)
    s_pos = np.array([0.50, 0.50, 0.50, 0.50, 0.50, 0.90, 0.50, 0.50])
    s_neg = np.array([0.40, 0.40, 0.40, 0.475, 0.474, 0.76, 0.46, 0.90])
    same = np.array([False, True, True, False, False, False, False, False])
    dup = np.array([False, False, True, False, False, False, False, True])
    got = false_negative_verdicts(s_neg, s_pos, same, dup, rules).tolist()
    # 0.475 = 0.95 * 0.5 is not below it: dropped; 0.474 is, but leaves a margin of 0.026 < 0.05.
    assert got == [KEPT, SAME_SAMPLE, SAME_SAMPLE, POSITIVE_AWARE, MARGIN, CEILING, MARGIN, DUPLICATE]
    no_margin = false_negative_verdicts(s_neg, s_pos, same, dup, FilterRules()).tolist()
    assert no_margin[4] == KEPT and no_margin[6] == KEPT


def test_cap_keeps_the_hardest_per_positive() -> None:
    keys = ["a", "a", "a", "b", "a"]
    s_neg = np.array([0.1, 0.3, 0.2, 0.9, 0.3])
    verdicts = np.array([KEPT, KEPT, KEPT, KEPT, POSITIVE_AWARE], dtype=object)
    assert cap_per_positive(keys, s_neg, verdicts, 2).tolist() == [OVER_CAP, KEPT, KEPT, KEPT, POSITIVE_AWARE]
    tied = cap_per_positive(["x"] * 3, np.array([0.2, 0.2, 0.2]), np.array([KEPT] * 3, dtype=object), 1)
    assert tied.tolist() == [KEPT, OVER_CAP, OVER_CAP]


def test_drop_details_carry_the_scores() -> None:
    rules = FilterRules(margin=0.1)
    assert drop_detail(POSITIVE_AWARE, 0.5, 0.5, rules, 2) == (
        "likely false negative: s_neg 0.5000 >= 0.95 x s_pos 0.5000")
    assert drop_detail(CEILING, 0.8, 0.9, rules, 2) == (
        "likely false negative: s_neg 0.8000 >= ceiling 0.75 (s_pos 0.9000)")
    assert drop_detail(OVER_CAP, 0.1, 0.3, rules, 2) == (
        "over the cap of 2 negatives per positive (s_neg 0.1000, s_pos 0.3000)")
    with pytest.raises(ValueError):
        drop_detail(KEPT, 0.1, 0.2, rules, 2)


def test_false_negative_rate_per_table_and_per_batch() -> None:
    table = pa.table({
        "negative_verdict": [None, KEPT, POSITIVE_AWARE, OVER_CAP, SAME_SAMPLE, KEPT],
        "negative_batch": [None, "b1", "b1", "b1", "b2", "b2"],
    })
    assert false_negative_rate(table) == pytest.approx(2 / 5)
    assert batch_false_negative_rates(table) == {"b1": pytest.approx(1 / 3), "b2": 0.5}
    assert false_negative_gate(table, 0.5)[0] is True
    passed, sentence = false_negative_gate(table, 0.4)
    assert not passed and sentence == "1 of 2 batches above the false-negative limit 0.4 (worst b2: 0.500)"
    assert false_negative_rate(pa.table({"id": ["x"]})) == 0.0
