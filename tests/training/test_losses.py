"""Losses against values computed by hand with ``math`` on 2x2 inputs, and their gradients
(``torch.autograd.gradcheck`` in float64)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from pipeline.training.losses import (
    EmbeddingConsistencyLoss,
    InfoNCELoss,
    KLConsistencyLoss,
    add_weighted,
    embedding_consistency,
    info_nce,
    kl_consistency,
    mixup_cross_entropy,
)
from pipeline.training.mixup import mixup_targets

F64 = torch.float64


def ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def test_info_nce_matches_hand_computed_value() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    b = torch.tensor([[3.0, 0.0], [0.6, 0.8]], dtype=F64)  # row 0 is normalised away
    # cosines [[1, 0.6], [0, 0.8]], scale 2 -> logits [[2, 1.2], [0, 1.6]]
    a_to_b = (ce([2, 1.2], 0) + ce([0, 1.6], 1)) / 2
    b_to_a = (ce([2, 0], 0) + ce([1.2, 1.6], 1)) / 2
    assert info_nce(a, b, 2.0).item() == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-12)
    assert info_nce(a, b, torch.tensor(2.0, dtype=F64), targets=torch.eye(2, dtype=F64)).item() == pytest.approx(
        (a_to_b + b_to_a) / 2, rel=1e-12)
    # soft targets after mixup with one lambda 0.75 and the pairs swapped: rows [0.75, 0.25], [0.25, 0.75]
    t = mixup_targets(torch.tensor([0.75, 0.75], dtype=F64), torch.tensor([1, 0]))
    soft_ab = (0.75 * ce([2, 1.2], 0) + 0.25 * ce([2, 1.2], 1) + 0.25 * ce([0, 1.6], 0) + 0.75 * ce([0, 1.6], 1)) / 2
    soft_ba = (0.75 * ce([2, 0], 0) + 0.25 * ce([2, 0], 1) + 0.25 * ce([1.2, 1.6], 0) + 0.75 * ce([1.2, 1.6], 1)) / 2
    assert info_nce(a, b, 2.0, targets=t).item() == pytest.approx((soft_ab + soft_ba) / 2, rel=1e-12)
    assert InfoNCELoss(weight=0.5)(a, b, 2.0).item() == pytest.approx(0.5 * (a_to_b + b_to_a) / 2, rel=1e-12)


def test_kl_consistency_matches_hand_computed_value() -> None:
    p = torch.tensor([[0.0, math.log(3)], [1.0, 2.0]], dtype=F64)  # row 0: P = [1/4, 3/4]
    q = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64)  # row 0: Q = [1/2, 1/2]; row 1 equal to P
    kl_pq = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_qp = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_consistency(p, q, symmetric=False).item() == pytest.approx(kl_pq / 2, rel=1e-12)
    assert kl_consistency(p, q).item() == pytest.approx((kl_pq + kl_qp) / 4, rel=1e-12)
    # temperature 2: P = softmax([0, ln 3 / 2]) = [1, sqrt 3] / (1 + sqrt 3)
    p2 = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    kl_t = sum(pi * math.log(pi / 0.5) for pi in p2)
    assert kl_consistency(p, q, temperature=2.0, symmetric=False).item() == pytest.approx(kl_t / 2, rel=1e-12)
    assert KLConsistencyLoss(weight=3.0, symmetric=False)(p, q).item() == pytest.approx(1.5 * kl_pq, rel=1e-12)
    assert kl_consistency(q, q).item() == 0.0


def test_embedding_consistency_matches_hand_computed_value() -> None:
    a = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=F64)
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=F64)
    assert embedding_consistency(a, b).item() == pytest.approx((1 + (1 - 1 / math.sqrt(2))) / 2, rel=1e-12)
    assert embedding_consistency(a, b, "l2").item() == pytest.approx(((1 + 4) + (4 + 1)) / 2, rel=1e-12)
    assert EmbeddingConsistencyLoss(0.1, metric="l2")(a, b).item() == pytest.approx(0.5, rel=1e-12)
    assert embedding_consistency(a, 2 * a).item() == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="metric"):
        embedding_consistency(a, b, "l1")  # type: ignore[arg-type]


def test_mixup_cross_entropy_matches_hand_computed_value() -> None:
    logits = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]], dtype=F64)
    labels, perm, lam = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.7, 0.4], dtype=F64)
    want = ((0.7 * -math.log(0.25) + 0.3 * -math.log(0.75)) + (0.4 * -math.log(0.25) + 0.6 * -math.log(0.75))) / 2
    assert mixup_cross_entropy(logits, labels, lam, perm).item() == pytest.approx(want, rel=1e-12)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert mixup_cross_entropy(logits, labels, torch.ones(2, dtype=F64), perm).item() == pytest.approx(plain.item())


def test_add_weighted_sums_the_task_loss_and_the_terms() -> None:
    task, t1, t2 = torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)
    assert add_weighted(task, t1, t2).item() == 3.75
    assert add_weighted(None, t1).item() == 0.25
    with pytest.raises(ValueError):
        add_weighted(None)


def test_gradients_are_correct_in_float64() -> None:
    g = torch.Generator().manual_seed(0)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()

    a, b, scale = leaf(4, 5), leaf(4, 5), torch.tensor(3.0, dtype=F64, requires_grad=True)
    t = mixup_targets(torch.tensor([0.6, 0.9, 0.3, 1.0], dtype=F64), torch.tensor([2, 0, 1, 3]))
    assert gradcheck(lambda x, y, s: info_nce(x, y, s), (a, b, scale))
    assert gradcheck(lambda x, y, s: info_nce(x, y, s, targets=t), (a, b, scale))
    assert gradcheck(lambda x, y: info_nce(x, y, 2.0, normalize=False), (a, b))
    p, q = leaf(4, 3), leaf(4, 3)
    assert gradcheck(lambda x, y: kl_consistency(x, y, temperature=1.5), (p, q))
    assert gradcheck(lambda x, y: kl_consistency(x, y, symmetric=False), (p, q))
    for metric in ("cosine", "l2"):
        assert gradcheck(lambda x, y, m=metric: embedding_consistency(x, y, m), (a, b))
    labels = torch.tensor([0, 2, 1, 1])
    lam, perm = torch.tensor([0.2, 0.5, 0.9, 1.0], dtype=F64), torch.tensor([3, 2, 1, 0])
    assert gradcheck(lambda x: mixup_cross_entropy(x, labels, lam, perm), (p,))
