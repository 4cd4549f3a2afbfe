"""What the demo CLAP learns from and is judged against: sample-world tone bursts, the texts
``clap_score`` pairs them with, the swapped audio and swapped texts, and the model's inputs.

A segment's audio is a tone burst per event (pitch, count and order are audible; direction and
colour are not). Its texts are the ones :func:`stages.clap_score.clip_texts` builds: the
subtitles joined (``segment_text="subtitles"``: every pitch in order) or the content sentence
(``"content"``: only the count is audible). :func:`compatible` says when a text describes a
clip: the subtitles name the clip's pitches in order, the sentence its number of events. Hard
negatives change exactly one audible thing, in the text or in the audio: one pitch replaced by
another, two pitches swapped in order, or one event dropped (or, in a text, one added).

:func:`log_mel` computes the same log-mel spectrogram as the checkpoint's
``ClapFeatureExtractor`` (periodic Hann, reflect-padded centred frames, power 2, Slaney mel
filters, dB) a batch at a time in torch: the extractor's frame loop would cost more than the
training step. :func:`world_tokenizer` builds a byte-level BPE tokenizer (RoBERTa's format)
whose merges spell the world's words, so the checkpoint stays small and any text still encodes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.world.segments import (
    COUNT_WORDS,
    PITCHES_HZ,
    SAMPLE_RATE,
    BallEvent,
    SegmentScene,
    plan_segment_scene,
    render_audio,
    segment_content,
)
from stages.clap_score import clip_texts

AUDIO_EDITS = ("pitch", "order", "drop")
TEXT_EDITS = ("pitch", "order", "drop", "add")
# Text sets as (kind, value): ("pitches", (440, 660)) for subtitles, ("count", 2) for content.
Signature = tuple[str, Any]
_HZ_RE = re.compile(r"\b(\d+) Hz\b")
_COUNT_RE = re.compile(rf"\bmoves ({'|'.join(COUNT_WORDS.values())}|\d+) times\b")
_NUMBERS = {word: count for count, word in COUNT_WORDS.items()}


# ---- texts and what they say ------------------------------------------------------------------
def scene_row(scene: SegmentScene) -> dict[str, Any]:
    """The fields of a segment row that ``clip_texts`` reads."""
    return {"kind": "segment", "content": segment_content(scene), "items": None,
            "subtitles": [{"start_us": e.start_us, "duration_us": e.duration_us,
                           "text": e.subtitle_text()} for e in scene.events],
            "media": [{"modality": "video"}, {"modality": "audio"}]}


def scene_texts(scene: SegmentScene) -> tuple[str, str]:
    """(subtitles text, content text) exactly as ``clap_score`` builds them."""
    row = scene_row(scene)
    return clip_texts(row, "subtitles")[0], clip_texts(row, "content")[0]


def signature(text: str) -> Signature | None:
    """What of a text the audio can confirm: the pitches in order, else the count."""
    pitches = _HZ_RE.findall(text)
    if pitches:
        return ("pitches", tuple(int(p) for p in pitches))
    found = _COUNT_RE.search(text)
    if found:
        word = found.group(1)
        return ("count", _NUMBERS.get(word) or int(word))
    return None


def compatible(sig: Signature | None, pitches: tuple[int, ...]) -> bool:
    """Does a text with signature ``sig`` describe a clip whose tones are ``pitches``?"""
    if sig is None:
        return False
    return sig[1] == pitches if sig[0] == "pitches" else sig[1] == len(pitches)


def scene_pitches(scene: SegmentScene) -> tuple[int, ...]:
    return tuple(e.pitch_hz for e in scene.events)


# ---- one-attribute edits ---------------------------------------------------------------------
def _with_pitches(events: tuple[BallEvent, ...], pitches: Iterable[int]) -> tuple[BallEvent, ...]:
    return tuple(dataclasses.replace(e, pitch_hz=int(p)) for e, p in zip(events, pitches, strict=True))


def edit_events(events: tuple[BallEvent, ...], edit: str, rng: np.random.Generator
                ) -> tuple[BallEvent, ...] | None:
    """``events`` with one audible change, or None when ``edit`` cannot apply."""
    pitches = [e.pitch_hz for e in events]
    if edit == "pitch":
        k = int(rng.integers(len(pitches)))
        unused = [p for p in PITCHES_HZ if p not in pitches]
        pitches[k] = int(unused[int(rng.integers(len(unused)))])
        return _with_pitches(events, pitches)
    if edit == "order":
        if len(pitches) < 2:
            return None
        i, j = (int(x) for x in rng.choice(len(pitches), size=2, replace=False))
        pitches[i], pitches[j] = pitches[j], pitches[i]
        return _with_pitches(events, pitches)
    if edit == "drop":
        if len(events) < 2:
            return None
        k = int(rng.integers(len(events)))
        return events[:k] + events[k + 1:]
    if edit == "add":  # text only: the audio would need room for another burst
        unused = [p for p in PITCHES_HZ if p not in pitches]
        last = events[-1]
        extra = BallEvent(last.end_us + 1_000_000, last.duration_us, last.direction,
                          int(unused[int(rng.integers(len(unused)))]))
        return (*events, extra)
    raise ValueError(f"unknown edit {edit!r}")


def edited_scene(scene: SegmentScene, edit: str, rng: np.random.Generator) -> SegmentScene | None:
    events = edit_events(scene.events, edit, rng)
    return None if events is None else dataclasses.replace(scene, events=events)


def swapped_texts(scene: SegmentScene, rng: np.random.Generator, count: int) -> list[str]:
    """Up to ``count`` texts that no longer describe the clip: subtitle edits (each kind in
    turn, in a random order) and, for the sentence, the other count."""
    out: list[str] = []
    for edit in rng.permutation(TEXT_EDITS * -(-count // len(TEXT_EDITS))):
        if len(out) == count:
            break
        changed = edited_scene(scene, str(edit), rng)
        if changed is None:
            continue
        subtitles, content = scene_texts(changed)
        out.append(content if rng.random() < 0.2 and len(changed.events) != len(scene.events)
                   else subtitles)
    return out


# ---- examples --------------------------------------------------------------------------------
def example(rng: np.random.Generator, index: int, content_share: float = 0.2
            ) -> tuple[SegmentScene, np.ndarray, str]:
    """A fresh world clip, its audio and one of its texts (the sentence ``content_share`` of the
    time, else the subtitles)."""
    scene = plan_segment_scene(f"clap-{index}", rng)
    subtitles, content = scene_texts(scene)
    text = content if rng.random() < content_share else subtitles
    return scene, render_audio(scene, 0, silent=False), text


def audio_of(scene: SegmentScene) -> np.ndarray:
    return render_audio(scene, 0, silent=False)


# ---- model input -----------------------------------------------------------------------------
def log_mel(clips: np.ndarray, feature_extractor: Any) -> Any:
    """(N, 1, frames, mel) float32 torch input for ``ClapAudioModel``, equal (to float32
    rounding) to ``feature_extractor(list(clips), ...)["input_features"]`` for clips of exactly
    ``nb_max_samples`` samples, with truncation ``rand_trunc`` and padding ``pad``."""
    import torch

    fe = feature_extractor
    n_fft, hop = int(fe.fft_window_size), int(fe.hop_length)
    x = torch.as_tensor(np.asarray(clips), dtype=torch.float64)
    if x.shape[1] != fe.nb_max_samples:
        raise ValueError(f"clips must have {fe.nb_max_samples} samples, got {x.shape[1]}")
    x = torch.nn.functional.pad(x[:, None], (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    frames = x.unfold(1, n_fft, hop)  # (N, frames, n_fft)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    spectrum = torch.fft.rfft(frames * window, dim=-1).to(torch.complex64)
    power = spectrum.abs().double() ** 2
    mel = torch.as_tensor(fe.mel_filters_slaney, dtype=torch.float64)  # (freq, mel)
    db = 10.0 * torch.log10(torch.clamp(power @ mel, min=1e-10))
    return db.float()[:, None]


# ---- tokenizer -------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (byte-level BPE's alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def world_tokenizer(texts: Iterable[str], max_length: int) -> Any:
    """A RoBERTa byte-level BPE tokenizer: every byte is a token, and each piece of ``texts``
    (GPT-2 pre-tokenisation) is one token through merges built left to right."""
    import regex
    from transformers import RobertaTokenizer

    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+""")
    table = _bytes_to_unicode()
    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for byte in range(256):
        vocab.setdefault(table[byte], len(vocab))
    pieces = sorted({p for text in texts for p in pattern.findall(text)})
    merges: list[tuple[str, str]] = []
    for piece in pieces:
        chars = [table[b] for b in piece.encode("utf-8")]
        token = chars[0]
        for char in chars[1:]:
            if (token, char) not in merges:
                merges.append((token, char))
            token += char
            vocab.setdefault(token, len(vocab))
    vocab["<mask>"] = len(vocab)
    # The tokenizers backend takes (left, right) pairs; the stub types merges as strings.
    return RobertaTokenizer(vocab=vocab, merges=merges,  # type: ignore[arg-type]
                            model_max_length=max_length)


def corpus_texts(n: int = 2000, seed: int = 54321) -> list[str]:
    """Texts the tokenizer must spell: world clips' texts and every edit of them."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for i in range(n):
        scene = plan_segment_scene(f"corpus-{i}", rng)
        texts += [*scene_texts(scene), *swapped_texts(scene, rng, 4)]
    return texts + [f"the ball moves {d} with a {p} Hz tone" for d in ("left", "right", "up", "down")
                    for p in PITCHES_HZ]


__all__ = ["AUDIO_EDITS", "SAMPLE_RATE", "TEXT_EDITS", "audio_of", "compatible", "corpus_texts",
           "edited_scene", "example", "log_mel", "scene_pitches", "scene_texts", "signature",
           "swapped_texts", "world_tokenizer"]
