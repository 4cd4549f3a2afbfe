"""What the scorer stages share: model/device/threshold parameters (the checkpoint is resolved
and verified when they are validated, so a bad checkpoint fails at config load), the
feature-norm guard, the DataComp-style top-fraction threshold and the embedding columns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from access.models import SHA256_PATTERN, resolve_checkpoint
from stages.base import StageParams

EMB_TYPE = pa.list_(pa.list_(pa.float16()))
SCORES_TYPE = pa.list_(pa.float32())


def unit_features(raw: Any, max_norm: float) -> tuple[Any, np.ndarray]:
    """(unit vectors as float32, ok mask). Norms are taken in float64 (float32 features up to
    3.4e38 square without overflow), features are clipped to ``max_norm`` before they are
    normalised; a non-finite or all-zero feature is flagged, never silently scored."""
    import torch

    x = raw.double()
    norms = x.norm(dim=1, keepdim=True)
    ok = torch.isfinite(x).all(dim=1) & (norms[:, 0] > 0)
    x = x * torch.clamp(max_norm / norms.clamp(min=1e-300), max=1.0)
    unit = x / x.norm(dim=1, keepdim=True).clamp(min=1e-300)
    return unit.float(), ok.cpu().numpy()


def top_fraction_threshold(scores: np.ndarray, keep_top_fraction: float) -> float:
    """The score at which the top ``keep_top_fraction`` of ``scores`` is kept (DataComp)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return float("-inf")
    return float(np.quantile(finite, 1.0 - keep_top_fraction, method="lower"))


def embedding_array(per_row: list[np.ndarray | None]) -> pa.Array:
    """list<list<float16>> from one (k, d) array (or None) per row."""
    outer, inner, values, mask = [0], [0], [], []
    for emb in per_row:
        mask.append(emb is None)
        for vec in [] if emb is None else emb:
            values.append(np.asarray(vec, np.float16))
            inner.append(inner[-1] + len(vec))
        outer.append(len(inner) - 1)
    flat = pa.array(np.concatenate(values) if values else np.zeros(0, np.float16), pa.float16())
    vectors = pa.ListArray.from_arrays(pa.array(inner, pa.int32()), flat)
    return pa.ListArray.from_arrays(pa.array(outer, pa.int32()), vectors,
                                    mask=pa.array(mask, pa.bool_()))


def model_id(checkpoint: str, sha256: str | None) -> str:
    """The ``*_model`` value of scored rows: checkpoint and pin. negatives_filter reuses
    ``clip_image_emb`` only when its own model id equals the row's ``clip_model``."""
    return f"{checkpoint}@{(sha256 or 'unpinned')[:12]}"


def load_scorer(p: ModelParams, loader: Callable[[Path, str], Any]) -> tuple[str, Any]:
    """Once per actor: torch threads, the device, and the verified checkpoint through
    ``loader`` (``access.models.load_open_clip`` or ``load_clap``). Returns (device, bundle)."""
    import torch

    if p.num_threads:
        torch.set_num_threads(p.num_threads)
    device = pick_device(p.device)
    return device, loader(resolve_checkpoint(p.checkpoint, p.checkpoint_sha256), device)


def pick_device(device: str) -> str:
    """``auto``: CUDA when torch sees a device, else the CPU. A CUDA device that torch does not
    see is a clear error here, not an obscure one at the first tensor moved there."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{device}: torch sees no CUDA device")
    return device


def autocast(device: str, fp16: bool) -> Any:
    import torch

    if device.startswith("cuda") and fp16:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def set_column(rows: pa.Table, name: str, values: Any, type_: pa.DataType) -> pa.Table:
    idx = rows.schema.get_field_index(name)
    array = values if isinstance(values, pa.Array) else pa.array(values, type_)
    return rows.set_column(idx, pa.field(name, type_), array)


class ModelParams(StageParams):
    """Model and device settings of every stage that runs a model (scorers, negatives_filter)."""

    checkpoint: str = Field(description="local dir, s3://bucket/prefix or hf:org/name")
    checkpoint_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN,
                                          description="sha256 of the weights file")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fp16: bool = Field(default=True, description="fp16 autocast on CUDA (ignored on CPU)")
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads per actor")
    forward_batch: int = Field(default=256, ge=1, description="inputs per model forward")

    @model_validator(mode="after")
    def _checkpoint_exists(self) -> ModelParams:
        resolve_checkpoint(self.checkpoint, self.checkpoint_sha256)  # fails fast, before data
        return self


class ScorerParams(ModelParams):
    """Model, device and threshold settings common to the scorers."""

    max_feature_norm: float = Field(default=1e4, gt=0, description="features are clipped to this norm")
    keep_top_fraction: float | None = Field(
        default=None, gt=0, le=1, description="keep this top share of each batch per kind (DataComp)")
    release_decoded: bool = Field(default=True, description="null the decoded columns once used")
