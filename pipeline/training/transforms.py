"""Batch transforms for cross-modal training: modality dropout.

Modality dropout hides whole modalities of some samples so that a model learns to work from
whichever modalities are present: per sample, each listed modality is dropped with its own
probability, its tensor filled (zeros by default, or a pad token id), and a boolean mask
``<key>_present`` is added for the model and the losses. A batch that already carries such a
mask (a modality missing from the data) keeps it: dropped stays dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

PRESENT_SUFFIX = "_present"


def present_key(key: str) -> str:
    return f"{key}{PRESENT_SUFFIX}"


@dataclass
class ModalityDropout:
    """Drop modality ``key`` of each sample with probability ``p[key]``.

    With ``keep_one`` a sample never loses all its (present) modalities: when every one is
    drawn for dropping, one of them, chosen uniformly, is kept. ``fill`` is the value written
    over a dropped tensor, one for all keys or per key. ``seed`` fixes the draws (per process)."""

    p: Mapping[str, float]
    fill: float | Mapping[str, float] = 0.0
    keep_one: bool = True
    seed: int | None = None
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.p:
            raise ValueError("modality dropout needs at least one modality")
        bad = {k: v for k, v in self.p.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"dropout probabilities must be in [0, 1]: {bad}")
        if self.seed is not None:
            self._generator = torch.Generator().manual_seed(self.seed)

    def _fill(self, key: str) -> float:
        return float(self.fill[key]) if isinstance(self.fill, Mapping) else float(self.fill)

    def draw(self, n: int, present: torch.Tensor) -> torch.Tensor:
        """(n, K) boolean keep mask for ``present`` (n, K) modalities, following ``p`` and ``keep_one``."""
        probs = torch.tensor([float(self.p[k]) for k in self.p])
        keep = (torch.rand(n, len(probs), generator=self._generator) >= probs) & present
        if self.keep_one:
            lost_all = ~keep.any(1) & present.any(1)
            if lost_all.any():
                # one present modality per such row, uniformly: argmax of random scores over present ones
                scores = torch.rand(n, len(probs), generator=self._generator).masked_fill(~present, -1.0)
                rescue = torch.zeros_like(keep)
                rescue[torch.arange(n), scores.argmax(1)] = True
                keep |= rescue & lost_all[:, None]
        return keep

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        keys = list(self.p)
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"modality dropout keys not in the batch: {missing}")
        n = int(batch[keys[0]].shape[0])
        present = torch.stack(
            [batch[present_key(k)].bool().cpu() if present_key(k) in batch else torch.ones(n, dtype=torch.bool)
             for k in keys], dim=1)
        keep = self.draw(n, present)
        out = dict(batch)
        for j, key in enumerate(keys):
            x = batch[key]
            mask = keep[:, j].to(x.device)
            shape = (n,) + (1,) * (x.dim() - 1)
            out[key] = torch.where(mask.reshape(shape), x, torch.full_like(x, self._fill(key)))
            out[present_key(key)] = mask
        return out
