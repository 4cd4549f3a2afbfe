"""Cross-modal losses: symmetric InfoNCE (CLIP), KL consistency between modality predictions,
cosine/L2 consistency between paired embeddings, and the mixup form of cross-entropy.

The functions return unweighted means over the batch (differentiable, float64-safe for
``torch.autograd.gradcheck``). The modules carry a ``weight`` and return ``weight * loss`` so
that a training step reads ``loss = add_weighted(task_loss, clip(a, b, scale), kl(p, q))``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

EmbeddingMetric = Literal["cosine", "l2"]


def contrastive_logits(
    a: torch.Tensor, b: torch.Tensor, logit_scale: float | torch.Tensor = 1 / 0.07, *, normalize: bool = True
) -> torch.Tensor:
    """``logit_scale * a @ b.T`` on L2-normalised rows (``normalize``): row i scores a_i against every b_j."""
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return logit_scale * a @ b.T


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: float | torch.Tensor = 1 / 0.07,
    *,
    targets: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE (the CLIP loss): the mean of the a->b and b->a cross-entropies.

    Without ``targets`` pair i is the positive of row i. ``targets`` (B, B) are soft a->b
    targets, e.g. ``mixup.mixup_targets``; the b->a direction uses their transpose with rows
    renormalised to one (the same matrix when one lambda is shared by the batch)."""
    logits = contrastive_logits(a, b, logit_scale, normalize=normalize)
    if targets is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    if targets.shape != logits.shape:
        raise ValueError(f"targets of shape {tuple(targets.shape)} for logits of shape {tuple(logits.shape)}")
    targets = targets.to(logits.dtype)
    back = targets.T / targets.T.sum(-1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
    return (_soft_cross_entropy(logits, targets) + _soft_cross_entropy(logits.T, back)) / 2


def kl_consistency(
    logits_p: torch.Tensor, logits_q: torch.Tensor, *, temperature: float = 1.0, symmetric: bool = True
) -> torch.Tensor:
    """KL divergence between two modalities' prediction distributions (softmax of logits / T),
    averaged over the batch: ``KL(P || Q)``, or ``(KL(P || Q) + KL(Q || P)) / 2`` when symmetric.
    To treat P as a fixed teacher, pass ``logits_p.detach()`` with ``symmetric=False``."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"prediction shapes differ: {tuple(logits_p.shape)} and {tuple(logits_q.shape)}")
    lp = F.log_softmax(logits_p / temperature, dim=-1)
    lq = F.log_softmax(logits_q / temperature, dim=-1)
    kl_pq = (lp.exp() * (lp - lq)).sum(-1).mean()
    if not symmetric:
        return kl_pq
    kl_qp = (lq.exp() * (lq - lp)).sum(-1).mean()
    return (kl_pq + kl_qp) / 2


def embedding_consistency(a: torch.Tensor, b: torch.Tensor, metric: EmbeddingMetric = "cosine") -> torch.Tensor:
    """Distance between paired embeddings, averaged over the batch: ``1 - cos(a_i, b_i)``
    (``cosine``) or the squared Euclidean distance ``||a_i - b_i||^2`` (``l2``)."""
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    if metric == "cosine":
        return (1 - F.cosine_similarity(a, b, dim=-1, eps=1e-12)).mean()
    if metric == "l2":
        return (a - b).pow(2).sum(-1).mean()
    raise ValueError(f"metric must be 'cosine' or 'l2', not {metric!r}")


def mixup_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of a mixed batch with class-index labels:
    ``mean_i(lam_i * CE(logits_i, y_i) + (1 - lam_i) * CE(logits_i, y_perm[i]))``."""
    lam = lam.to(device=logits.device, dtype=logits.dtype)
    own = F.cross_entropy(logits, labels, reduction="none")
    other = F.cross_entropy(logits, labels[perm.to(labels.device)], reduction="none")
    return (lam * own + (1 - lam) * other).mean()


def add_weighted(task_loss: torch.Tensor | None, *terms: torch.Tensor) -> torch.Tensor:
    """``task_loss`` plus already weighted consistency terms (the modules below)."""
    parts = ([task_loss] if task_loss is not None else []) + list(terms)
    if not parts:
        raise ValueError("nothing to add: no task loss and no terms")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class InfoNCELoss(nn.Module):
    """``weight * info_nce(a, b, logit_scale, targets=...)``."""

    def __init__(self, weight: float = 1.0, *, normalize: bool = True) -> None:
        super().__init__()
        self.weight, self.normalize = weight, normalize

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, logit_scale: float | torch.Tensor = 1 / 0.07,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.weight * info_nce(a, b, logit_scale, targets=targets, normalize=self.normalize)


class KLConsistencyLoss(nn.Module):
    """``weight * kl_consistency(logits_p, logits_q)``."""

    def __init__(self, weight: float = 1.0, *, temperature: float = 1.0, symmetric: bool = True) -> None:
        super().__init__()
        self.weight, self.temperature, self.symmetric = weight, temperature, symmetric

    def forward(self, logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
        return self.weight * kl_consistency(logits_p, logits_q, temperature=self.temperature, symmetric=self.symmetric)


class EmbeddingConsistencyLoss(nn.Module):
    """``weight * embedding_consistency(a, b, metric)``."""

    def __init__(self, weight: float = 1.0, *, metric: EmbeddingMetric = "cosine") -> None:
        super().__init__()
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be 'cosine' or 'l2', not {metric!r}")
        self.weight, self.metric = weight, metric

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.weight * embedding_consistency(a, b, self.metric)
