"""An open_clip checkpoint as an embedder of texts and images, outside the scorer stages.

``negatives_filter`` embeds what ``clip_score`` has not embedded (edited texts, recoloured
images, anchors scored by another model) with :class:`ClipEmbedder`: the model loads through
``access.models`` as the scorers load it, and images go through open_clip's own eval transform,
as ``decode_media`` prepares them, so its embeddings equal ``clip_score``'s.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from access.io import read_bytes, resolve_media_uri
from stages.negatives_mining import normalize_rows
from stages.scoring import ModelParams, autocast, load_scorer, model_id


class ClipEmbedder:
    """An open_clip checkpoint loaded through ``access.models``: unit-norm float32 embeddings
    of texts and of images (open_clip's own eval transform, as ``decode_media`` prepares them)."""

    def __init__(self, params: ModelParams) -> None:
        from open_clip.transform import image_transform

        from access.models import load_open_clip

        self.device, self.bundle = load_scorer(params, load_open_clip)  # threads, device, checkpoint
        self.forward_batch, self.fp16 = params.forward_batch, params.fp16
        b = self.bundle
        self.model_id = model_id(params.checkpoint, params.checkpoint_sha256)  # as clip_score's clip_model
        self.transform = image_transform(b.image_size, is_train=False, mean=b.mean, std=b.std,
                                         resize_mode=b.resize_mode, interpolation=b.interpolation,
                                         fill_color=b.fill_color)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = [np.zeros((0, 1), np.float32)]
        with torch.inference_mode(), autocast(self.device, self.fp16):
            for s in range(0, len(texts), self.forward_batch):
                tokens = self.bundle.tokenizer(texts[s:s + self.forward_batch]).to(self.device)
                out.append(self.bundle.model.encode_text(tokens).float().cpu().numpy())
        return normalize_rows(np.concatenate(out[1:])) if texts else out[0]

    def embed_images(self, images: list[Any]) -> np.ndarray:
        """``images``: PIL images (any mode)."""
        import torch

        out = []
        with torch.inference_mode(), autocast(self.device, self.fp16):
            for s in range(0, len(images), self.forward_batch):
                x = torch.stack([self.transform(im.convert("RGB")) for im in images[s:s + self.forward_batch]])
                out.append(self.bundle.model.encode_image(x.to(self.device)).float().cpu().numpy())
        return normalize_rows(np.concatenate(out)) if out else np.zeros((0, 1), np.float32)


def load_image(uri: str, root: str | None) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(read_bytes(resolve_media_uri(uri, root))))
    image.load()
    return image
