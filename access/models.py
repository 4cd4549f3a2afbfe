"""Loading model checkpoints: open_clip models with their tokenizer, transformers CLAP models
with their processor. Where a checkpoint comes from (local, ``s3://``, ``hf:``) and its sha256
pin are :mod:`access.checkpoints`'s; its names are re-exported here for the stages that import
both from one place.

Weights load from safetensors; other formats go through ``torch.load(weights_only=True)`` only.
open_clip checkpoints are directories with ``open_clip_config.json`` and weights, loaded with
``local-dir:``. A config may name its own BPE merges (``"xmodal_tokenizer": {"bpe": FILE}``):
the demo model's small vocabulary keeps its checkpoint a few MB. CLAP checkpoints are
``save_pretrained`` directories of ``ClapModel`` and ``ClapProcessor``, loaded with
``local_files_only=True`` and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from access.checkpoints import (
    SHA256_PATTERN,
    WEIGHT_NAMES,
    CheckpointError,
    copy_s3_checkpoint,
    file_sha256,
    hf_cache_root,
    hf_snapshot,
    model_cache_dir,
    resolve_checkpoint,
    verify_sha256,
    weights_file,
)

__all__ = [
    "SHA256_PATTERN", "WEIGHT_NAMES", "CheckpointError", "ClapBundle", "OpenClipBundle", "copy_s3_checkpoint",
    "file_sha256", "hf_cache_root", "hf_snapshot", "load_clap", "load_open_clip", "model_cache_dir",
    "normalise_pixels", "open_clip_config", "resolve_checkpoint", "verify_sha256", "weights_file",
]

@dataclass
class OpenClipBundle:
    """An open_clip model in eval mode with what its inputs need."""

    model: Any
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str
    interpolation: str
    fill_color: int

    def model_input(self, pixels: Any) -> Any:
        """:func:`normalise_pixels` with this model's mean and std. The one place the scorers,
        the similarity and the demo evaluation turn pixels into model input, so their scores
        agree."""
        return normalise_pixels(pixels, self.mean, self.std)


def normalise_pixels(pixels: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """uint8 ``(N, H, W, 3)`` pixels (a torch tensor, already through ``decode_media``'s
    geometric transform) -> normalised float ``(N, 3, H, W)`` model input, on the pixels' device.
    The demo model trains on exactly this input."""
    import torch

    mean_t = torch.tensor(mean, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.permute(0, 3, 1, 2).float() / 255.0 - mean_t) / std_t


def open_clip_config(path: Path) -> dict[str, Any]:
    config_path = path / "open_clip_config.json"
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {path}: open_clip_config.json is missing")
    config: dict[str, Any] = json.loads(config_path.read_text())
    if "model_cfg" not in config:
        raise CheckpointError(f"checkpoint {path}: open_clip_config.json has no model_cfg")
    return config


def load_open_clip(path: Path, device: str = "cpu") -> OpenClipBundle:
    """Load an open_clip checkpoint directory (``local-dir:``) and its tokenizer."""
    import open_clip

    config = open_clip_config(path)
    model = open_clip.create_model(f"local-dir:{path}", device=device, weights_only=True,
                                   require_pretrained=True)
    model.eval()
    text_cfg = config["model_cfg"]["text_cfg"]
    own = config.get("xmodal_tokenizer") or {}
    if own.get("bpe"):
        tokenizer = open_clip.SimpleTokenizer(bpe_path=str(path / own["bpe"]),
                                              context_length=text_cfg.get("context_length", 77))
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    vocab = getattr(tokenizer, "vocab_size", None)
    if vocab is not None and vocab > int(text_cfg.get("vocab_size", 49408)):
        raise CheckpointError(f"checkpoint {path}: tokenizer has {vocab} tokens, the model "
                              f"{text_cfg.get('vocab_size')}")
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    # No global torch.set_grad_enabled(False) here: it leaked into every later caller in the
    # process (a training step after a scoring stage had no gradients). Callers run their
    # forwards under torch.inference_mode().
    return OpenClipBundle(
        model=model, tokenizer=tokenizer,
        image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
        resize_mode=str(pp.get("resize_mode", "shortest")),
        interpolation=str(pp.get("interpolation", "bicubic")),
        fill_color=int(pp.get("fill_color", 0)),
    )


@dataclass
class ClapBundle:
    """A transformers ClapModel in eval mode and its ClapProcessor."""

    model: Any
    processor: Any

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def max_samples(self) -> int:
        return int(self.processor.feature_extractor.nb_max_samples)


def load_clap(path: Path, device: str = "cpu") -> ClapBundle:
    """Load a ClapModel/ClapProcessor directory with ``local_files_only=True``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import ClapModel, ClapProcessor

    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint {path}: config.json is missing")
    model = ClapModel.from_pretrained(str(path), local_files_only=True)
    # PreTrainedModel.to is decorated with functools.wraps(nn.Module.to); typeshed's _Wrapped has no
    # __get__, so mypy does not bind self and reads ``device`` as the self argument.
    model = model.to(device).eval()  # type: ignore[arg-type]
    processor = ClapProcessor.from_pretrained(str(path), local_files_only=True)
    return ClapBundle(model=model, processor=processor)
