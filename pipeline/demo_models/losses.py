"""The contrastive loss both demo models train with (``clip_train``, ``clap_train``)."""

from __future__ import annotations

from typing import Any


def multi_positive_nll(logits: Any, positive: Any) -> Any:
    """Mean over the rows that have a positive of -log(the softmax mass on their positives):
    InfoNCE where a row may have several positives (several captions of one image)."""
    import torch

    rows = positive.any(dim=1)
    logits, positive = logits[rows], positive[rows]
    masked = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)).mean()
