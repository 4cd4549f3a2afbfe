"""Tiny random-init checkpoints of both scorers, written the way production ones are stored.

open_clip: ``open_clip_config.json`` + ``open_clip_model.safetensors`` (loaded with
``local-dir:``, the stock tokenizer). CLAP: ``ClapModel``/``ClapProcessor.save_pretrained`` of a
tiny ``ClapConfig``, a RoBERTa BPE tokenizer built from a word list, and a feature extractor at
16 kHz with a one-second window and ``rand_trunc`` (no fusion). Seeds are fixed, so every
session writes the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIP_IMAGE_SIZE = 32
CLAP_RATE = 16_000
CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": CLIP_IMAGE_SIZE, "layers": 1, "width": 32, "patch_size": 8,
                   "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLAP_WORDS = ("the ball moves left right up down with a tone hz 330 440 550 660 880 red green "
              "blue yellow orange purple circle square triangle times two three figure shows "
              "large small sound").split()


def write_tiny_open_clip(out: Path, seed: int = 0, resize_mode: str = "shortest",
                         nan_projection: bool = False) -> Path:
    """A random-init open_clip model; ``nan_projection`` poisons the image projection (every
    image embedding becomes NaN: the FUSION guard's case)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.CLIP(**CLIP_CFG)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if nan_projection:
        state["visual.proj"] = torch.full_like(state["visual.proj"], float("nan"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": CLIP_CFG,
        "preprocess_cfg": {"mean": [0.48, 0.45, 0.40], "std": [0.26, 0.26, 0.27],
                           "resize_mode": resize_mode, "interpolation": "bicubic"},
    }))
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out


def tiny_roberta_tokenizer() -> Any:
    """A byte-level BPE tokenizer whose merges spell out ``CLAP_WORDS`` (with the leading-space
    marker), so every test word is one token."""
    from transformers import RobertaTokenizer

    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for char in sorted(set("".join(CLAP_WORDS)) | {"Ġ", "."}):
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in CLAP_WORDS:
        for prefix in ("", "Ġ"):
            token = prefix + word[0]
            vocab.setdefault(token, len(vocab))
            for char in word[1:]:
                if (token, char) not in merges:
                    merges.append((token, char))
                token += char
                vocab.setdefault(token, len(vocab))
            if prefix and (("Ġ", word[0]) not in merges):
                merges.insert(0, ("Ġ", word[0]))
    return RobertaTokenizer(vocab=vocab, merges=merges)


def write_tiny_clap(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tokenizer = tiny_roberta_tokenizer()
    features = ClapFeatureExtractor(feature_size=32, sampling_rate=CLAP_RATE, hop_length=160,
                                    max_length_s=1, fft_window_size=400, frequency_max=8000,
                                    truncation="rand_trunc", padding="repeatpad")
    config = ClapConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 64, "projection_dim": 16},
        audio_config={"spec_size": 64, "num_mel_bins": 32, "window_size": 4, "hidden_size": 32,
                      "patch_embeds_hidden_size": 16, "depths": [1, 1],
                      "num_attention_heads": [2, 2], "projection_dim": 16},
        projection_dim=16)
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(str(out))
    return out


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
