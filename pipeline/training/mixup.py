"""Cross-modal mixup and MixGen as collate functions.

A pair is a sample ``i`` and its partner ``perm[i]`` in the same batch (two batches are mixed
the same way with :func:`mix_batches`). One ``lambda ~ Beta(alpha, alpha)`` per pair is shared
by every modality of the pair (images, audio, feature vectors, label vectors), so the mixed
sample stays one coherent cross-modal sample: ``x = lam * x_i + (1 - lam) * x_perm[i]``. The
lambdas and the permutation are returned with the batch for the losses:
:func:`mixup_targets` gives the soft contrastive targets, ``losses.mixup_cross_entropy`` mixes
hard-label losses.

Input level mixes the collated tensors; feature level leaves the batch as it is and the model
calls :func:`mix_features` on its embeddings with the same ``lam``/``perm``. MixGen (Hao et al.,
2023) mixes images and concatenates the two texts, so the new pair stays a positive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import default_collate, get_worker_info

MixLevel = Literal["input", "feature"]


@dataclass(frozen=True)
class MixedBatch:
    """A collated batch with its mixing: ``lam[i]`` is the weight of sample ``i`` itself and
    ``perm[i]`` the index of its partner. At feature level ``batch`` is not mixed yet."""

    batch: dict[str, Any]
    lam: torch.Tensor
    perm: torch.Tensor
    level: MixLevel = "input"


def sample_lambdas(alpha: float, n: int, rng: np.random.Generator, *, per_sample: bool = False) -> torch.Tensor:
    """``n`` lambdas from Beta(alpha, alpha) (one value repeated unless ``per_sample``), float32.
    ``alpha <= 0`` means no mixing: every lambda is 1."""
    if alpha <= 0:
        return torch.ones(n)
    values = rng.beta(alpha, alpha, size=n if per_sample else 1)
    return torch.as_tensor(np.broadcast_to(values, (n,)).copy(), dtype=torch.float32)


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * a + (1 - lam) * b`` with ``lam`` of shape (B,) broadcast over the trailing dims.

    Written so that ``lam = 1`` returns ``a`` exactly. Raises TypeError for non-float tensors
    (mix one-hot or soft label vectors, not class indices)."""
    if not a.is_floating_point() or not b.is_floating_point():
        raise TypeError(f"mixup needs float tensors, got {a.dtype} and {b.dtype} (convert images to float; "
                        "use one-hot label vectors, or mix class-index losses with mixup_cross_entropy)")
    if a.shape != b.shape:
        raise ValueError(f"cannot mix tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    w = lam.to(device=a.device, dtype=a.dtype).reshape(-1, *([1] * (a.dim() - 1)))
    return a * w + b * (1 - w)


def mix_batches(
    a: Mapping[str, Any], b: Mapping[str, Any], lam: torch.Tensor, keys: Sequence[str]
) -> dict[str, Any]:
    """Mix ``keys`` of two batches with one lambda per pair shared by all keys; the other
    entries come from ``a`` unchanged."""
    missing = [k for k in keys if k not in a or k not in b]
    if missing:
        raise KeyError(f"mixup keys not in both batches: {missing}")
    out = dict(a)
    for key in keys:
        out[key] = mix(a[key], b[key], lam)
    return out


def mix_features(
    features: Mapping[str, torch.Tensor], lam: torch.Tensor, perm: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Feature-level mixup: mix each embedding with its partner's (``perm``) using ``lam``."""
    return {k: mix(v, v[perm.to(v.device)], lam) for k, v in features.items()}


def mixup_targets(lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(B, B) soft targets for a contrastive loss after input mixup: row ``i`` puts ``lam[i]`` on
    ``i`` and ``1 - lam[i]`` on ``perm[i]`` (the sum when they coincide). Rows sum to one."""
    n = lam.shape[0]
    targets = torch.zeros(n, n, dtype=lam.dtype, device=lam.device)
    rows = torch.arange(n, device=lam.device)
    targets[rows, rows] += lam
    targets.index_put_((rows, perm.to(lam.device)), 1 - lam, accumulate=True)
    return targets


def _batch_size(batch: Mapping[str, Any], keys: Sequence[str]) -> int:
    first = batch[keys[0]]
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else len(first)


@dataclass
class _ProcessRng:
    """A numpy Generator per process: DataLoader workers draw different lambdas (their torch
    seeds differ per worker and per epoch) unless a fixed ``seed`` is given."""

    seed: int | None = None
    _pid: int = -1
    _rng: np.random.Generator | None = None

    def get(self) -> np.random.Generator:
        if self._rng is None or self._pid != os.getpid():
            info = get_worker_info()
            worker = info.id if info is not None else 0
            base = self.seed if self.seed is not None else torch.initial_seed()
            self._rng, self._pid = np.random.default_rng([base, worker]), os.getpid()
        return self._rng


@dataclass
class MixupCollate:
    """Collate a list of samples, then mix the batch with a permutation of itself.

    ``keys`` are the modalities mixed at input level (all share each pair's lambda). At feature
    level nothing is mixed here: the returned ``lam``/``perm`` go to :func:`mix_features`."""

    keys: Sequence[str]
    alpha: float = 0.4
    level: MixLevel = "input"
    per_sample: bool = False
    collate_fn: Callable[[list[Any]], dict[str, Any]] = default_collate
    seed: int | None = None
    _rng: _ProcessRng = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.level not in ("input", "feature"):
            raise ValueError(f"level must be 'input' or 'feature', not {self.level!r}")
        if not self.keys:
            raise ValueError("mixup needs at least one key")
        self._rng = _ProcessRng(self.seed)

    def __call__(self, samples: list[Any]) -> MixedBatch:
        batch = self.collate_fn(samples)
        rng = self._rng.get()
        n = _batch_size(batch, self.keys)
        perm = torch.as_tensor(rng.permutation(n), dtype=torch.long)
        lam = sample_lambdas(self.alpha, n, rng, per_sample=self.per_sample)
        if self.level == "input":
            partner = {k: batch[k][perm] for k in self.keys}
            batch = mix_batches(batch, partner, lam, self.keys)
        return MixedBatch(batch, lam, perm, self.level)


def mixgen(
    images: torch.Tensor, texts: Sequence[str], lam: torch.Tensor, perm: torch.Tensor, *, num_mixed: int | None = None,
    separator: str = " ",
) -> tuple[torch.Tensor, list[str]]:
    """MixGen: for the first ``num_mixed`` samples (all by default), ``image_i`` becomes
    ``lam_i * image_i + (1 - lam_i) * image_perm[i]`` and ``text_i`` becomes
    ``text_i + separator + text_perm[i]``; the rest pass through. New pairs are positives."""
    n = images.shape[0]
    m = n if num_mixed is None else max(0, min(num_mixed, n))
    if len(texts) != n:
        raise ValueError(f"{n} images but {len(texts)} texts")
    weights = torch.ones(n, dtype=lam.dtype)
    weights[:m] = lam[:m]
    mixed = mix(images, images[perm], weights)
    new_texts = [t + separator + texts[int(perm[i])] if i < m else t for i, t in enumerate(texts)]
    return mixed, new_texts


@dataclass
class MixGenCollate:
    """Collate, then MixGen the ``image_key``/``text_key`` pair of a share of the batch.

    ``lam`` is fixed (0.5 in the paper) unless ``alpha`` is given (Beta(alpha, alpha) per batch).
    Texts are strings until ``tokenize`` (list of strings -> tensor) turns the mixed ones into
    the ``text_key`` tensor. The returned ``lam`` is 1 for samples left unmixed."""

    image_key: str
    text_key: str
    lam: float = 0.5
    alpha: float | None = None
    fraction: float = 1.0
    tokenize: Callable[[list[str]], torch.Tensor] | None = None
    collate_fn: Callable[[list[Any]], dict[str, Any]] = default_collate
    seed: int | None = None
    _rng: _ProcessRng = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], not {self.fraction}")
        self._rng = _ProcessRng(self.seed)

    def __call__(self, samples: list[Any]) -> MixedBatch:
        batch = self.collate_fn(samples)
        rng = self._rng.get()
        images, texts = batch[self.image_key], list(batch[self.text_key])
        n = images.shape[0]
        perm = torch.as_tensor(rng.permutation(n), dtype=torch.long)
        lam = sample_lambdas(self.alpha, n, rng) if self.alpha is not None else torch.full((n,), float(self.lam))
        m = round(self.fraction * n)
        images, texts = mixgen(images, texts, lam, perm, num_mixed=m)
        lam[m:] = 1.0
        out = dict(batch)
        out[self.image_key] = images
        out[self.text_key] = self.tokenize(texts) if self.tokenize is not None else texts
        return MixedBatch(out, lam, perm, "input")
