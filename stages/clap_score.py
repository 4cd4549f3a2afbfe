"""Stage ``clap_score``: CLAP (transformers ClapModel) audio-text similarities, with embeddings.

Consumes ``decoded_audio``/``decoded_audio_rate`` of ``decode_media`` (one clip per audio ref,
in media order) and ``kind``, ``content``, ``subtitles``, ``items`` and ``media``. The text of
a clip is, for a segment, its subtitles joined (``segment_text="subtitles"``, falling back to the
content) or its content sentence; for a document audio item, the nearest text item after it
(else before it). Audio at another rate than the model's is resampled with librosa; clips are
cut to the model's window (no random truncation: the same input gives the same score).

Produces ``clap_scores`` (one cosine per clip, float32), ``clap_score`` (the lowest),
``clap_audio_emb``/``clap_text_emb`` (unit-norm float16, in clip order) and ``clap_model``.
Rejects with ``ERR_CROSS_MDL_FUSION`` a row whose audio or embedding is non-finite, and with
``ERR_CROSS_MDL_LOW_SCORE`` a row whose ``clap_score`` is below ``min_score`` or, with
``keep_top_fraction``, under the batch quantile. Runs as an actor: the model loads once in
``setup()``; the decoded audio columns are nulled once used.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.decode_media import AUDIO_COLUMNS
from stages.object_lexicon import strip_markup
from stages.scoring import (
    EMB_TYPE,
    SCORES_TYPE,
    ScorerParams,
    autocast,
    embedding_array,
    load_scorer,
    model_id,
    set_column,
    top_fraction_threshold,
    unit_features,
)

log = logging.getLogger(__name__)


class ClapScoreParams(ScorerParams):
    min_score: float | None = Field(default=None, ge=-1, le=1, description="lowest allowed clip score")
    segment_text: Literal["subtitles", "content"] = "subtitles"


def _clean(text: str | None) -> str:
    return " ".join(strip_markup(text or "").split())


def clip_texts(row: dict[str, Any], segment_text: str) -> list[str]:
    """One text per audio ref of the row, in media order."""
    refs = [r for r in row["media"] or [] if r]
    audio_positions = [i for i, r in enumerate(refs) if r.get("modality") == "audio"]
    if row["kind"] == "document":
        items = [it for it in row["items"] or [] if it]
        texts = []
        for media_index in audio_positions:
            at = next((k for k, it in enumerate(items) if it.get("type") == "audio"
                       and it.get("media_index") == media_index), None)
            after = [it for it in items[(at or 0) + 1:] if it.get("type") == "text"]
            before = [it for it in items[:at or 0] if it.get("type") == "text"]
            near = after[0] if after else (before[-1] if before else None)
            texts.append(_clean(near.get("text")) if near and at is not None
                         else _clean(row["content"]))
        return texts
    text = _clean(row["content"])
    if segment_text == "subtitles" and row.get("subtitles"):
        text = " ".join(_clean((s or {}).get("text")) for s in row["subtitles"]).strip() or text
    return [text] * len(audio_positions)


def audio_clips(column: pa.ChunkedArray) -> list[list[np.ndarray] | None]:
    """``decoded_audio`` as float32 arrays per row, read from Arrow's buffers (views, never Python
    floats: a row is ~10^5 samples per clip): None for a null row, NaN for a null sample and a
    NaN scalar for a null clip, as ``np.asarray(..., np.float32)`` of the Python values gives."""
    out: list[list[np.ndarray] | None] = []
    for chunk in column.chunks:
        clips = chunk.values  # the chunk's clips, from offsets[0] to offsets[-1]
        samples = clips.values.to_numpy(zero_copy_only=False)  # nulls become NaN
        if samples.dtype != np.float32:
            samples = samples.astype(np.float32)
        row_at = chunk.offsets.to_numpy()
        clip_at = clips.offsets.to_numpy()
        null_rows = chunk.is_null().to_numpy(zero_copy_only=False)
        null_clips = clips.is_null().to_numpy(zero_copy_only=False) if clips.null_count else None
        for i in range(len(chunk)):
            if null_rows[i]:
                out.append(None)
                continue
            out.append([np.full((), np.nan, np.float32)
                        if null_clips is not None and null_clips[j]
                        else samples[clip_at[j]:clip_at[j + 1]]
                        for j in range(row_at[i], row_at[i + 1])])
    return out


class ClapScore(Stage):
    """CLAP scores and embeddings (see the module docstring)."""

    name: ClassVar[str] = "clap_score"
    params_model: ClassVar[type[StageParams]] = ClapScoreParams
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=64, actors=(1, 1))
    output_fields: ClassVar[list[pa.Field]] = [
        pa.field("clap_score", pa.float32()),
        pa.field("clap_scores", SCORES_TYPE),
        pa.field("clap_audio_emb", EMB_TYPE),
        pa.field("clap_text_emb", EMB_TYPE),
        pa.field("clap_model", pa.string()),
    ]
    error_code: ClassVar[ReasonCode] = ReasonCode.FUSION

    def setup(self) -> None:
        from access.models import load_clap

        p: ClapScoreParams = self.params  # type: ignore[assignment]
        self.device, self.bundle = load_scorer(p, load_clap)
        self.model_id = model_id(p.checkpoint, p.checkpoint_sha256)
        self._warned = False

    def encode_audio(self, clips: list[np.ndarray]) -> tuple[Any, np.ndarray]:
        """Unit audio embeddings of clips at the model's rate (first window of each)."""
        import torch

        p: ClapScoreParams = self.params  # type: ignore[assignment]
        fe, model = self.bundle.processor.feature_extractor, self.bundle.model
        feats = []
        for start in range(0, len(clips), p.forward_batch):
            chunk = [c[: self.bundle.max_samples] for c in clips[start:start + p.forward_batch]]
            inputs = fe(chunk, sampling_rate=self.bundle.sampling_rate, return_tensors="pt")
            kwargs = {"input_features": inputs["input_features"].to(self.device)}
            if "is_longer" in inputs:
                kwargs["is_longer"] = inputs["is_longer"].to(self.device)
            with torch.inference_mode(), autocast(self.device, p.fp16):
                pooled = model.audio_model(**kwargs).pooler_output
                feats.append(model.audio_projection(pooled).float())
        return unit_features(torch.cat(feats), p.max_feature_norm)

    def encode_texts(self, texts: list[str]) -> tuple[Any, np.ndarray]:
        import torch

        p: ClapScoreParams = self.params  # type: ignore[assignment]
        tok, model = self.bundle.processor.tokenizer, self.bundle.model
        feats = []
        for start in range(0, len(texts), p.forward_batch):
            enc = tok(texts[start:start + p.forward_batch], padding=True, truncation=True,
                      return_tensors="pt")
            with torch.inference_mode(), autocast(self.device, p.fp16):
                pooled = model.text_model(input_ids=enc["input_ids"].to(self.device),
                                          attention_mask=enc["attention_mask"].to(self.device)
                                          ).pooler_output
                feats.append(model.text_projection(pooled).float())
        return unit_features(torch.cat(feats), p.max_feature_norm)

    def _at_model_rate(self, clip: np.ndarray, rate: int | None) -> np.ndarray:
        audio = np.asarray(clip, np.float32)
        want = self.bundle.sampling_rate
        if rate and rate != want and np.isfinite(audio).all():
            import librosa

            if not self._warned:
                log.warning("clap_score: audio decoded at %d Hz, the model wants %d; "
                            "resampling (set decode_media.audio_sample_rate)", rate, want)
                self._warned = True
            audio = librosa.resample(audio, orig_sr=rate, target_sr=want).astype(np.float32)
        return audio

    def process(self, rows: pa.Table) -> pa.Table:
        p: ClapScoreParams = self.params  # type: ignore[assignment]
        data = rows.select(["kind", "content", "subtitles", "items", "media"]).to_pylist()
        decoded, rates = audio_clips(rows["decoded_audio"]), rows["decoded_audio_rate"].to_pylist()
        clips: list[np.ndarray] = []
        texts: dict[str, int] = {}
        plan: list[tuple[list[int], list[int]] | None] = []
        verdicts: list[Verdict | None] = [None] * len(data)
        for i, row in enumerate(data):
            if not decoded[i]:
                plan.append(None)
                continue
            audio = [self._at_model_rate(c, rates[i]) for c in decoded[i] or []]
            if not all(np.isfinite(a).all() and a.size for a in audio):
                verdicts[i] = Verdict(ReasonCode.FUSION, "audio has non-finite or no samples")
                plan.append(None)
                continue
            row_texts = clip_texts(row, p.segment_text)
            plan.append((list(range(len(clips), len(clips) + len(audio))),
                         [texts.setdefault(t, len(texts)) for t in row_texts]))
            clips += audio
        results: list[dict[str, Any]] = [{} for _ in data]
        if clips:
            aud_u, aud_ok = self.encode_audio(clips)
            txt_u, txt_ok = self.encode_texts(list(texts))
            aud, txt = aud_u.cpu().numpy(), txt_u.cpu().numpy()
            for i, entry in enumerate(plan):
                if entry is None:
                    continue
                a_idx, t_idx = entry
                if not (aud_ok[a_idx].all() and txt_ok[t_idx].all()):
                    verdicts[i] = Verdict(ReasonCode.FUSION, "non-finite CLAP embedding")
                    continue
                scores = np.einsum("kd,kd->k", aud[a_idx], txt[t_idx])
                results[i] = {"clap_scores": scores.tolist(), "clap_score": float(scores.min()),
                              "clap_audio_emb": aud[a_idx], "clap_text_emb": txt[t_idx],
                              "clap_model": self.model_id}
                if p.min_score is not None and scores.min() < p.min_score:
                    verdicts[i] = Verdict(ReasonCode.LOW_SCORE, f"CLAP score {scores.min():.3f}"
                                          f" is below {p.min_score:g}")
        if p.keep_top_fraction is not None:
            for kind in {row["kind"] for row in data}:
                idx = [i for i, row in enumerate(data) if row["kind"] == kind
                       and "clap_score" in results[i] and verdicts[i] is None]
                cut = top_fraction_threshold(
                    np.array([results[i]["clap_score"] for i in idx]), p.keep_top_fraction)
                for i in idx:
                    if results[i]["clap_score"] < cut:
                        verdicts[i] = Verdict(ReasonCode.LOW_SCORE, f"CLAP score "
                                              f"{results[i]['clap_score']:.3f} is under the "
                                              f"batch's top {p.keep_top_fraction:g} ({cut:.3f})")
        for field in self.output_fields:
            values = [r.get(field.name) for r in results]
            array = embedding_array(values) if field.type == EMB_TYPE else values
            rows = set_column(rows, field.name, array, field.type)
        if p.release_decoded:
            for name in AUDIO_COLUMNS:
                idx = rows.schema.get_field_index(name)
                rows = rows.set_column(idx, rows.schema.field(idx),
                                       pa.nulls(rows.num_rows, rows.schema.field(idx).type))
        return reject_rows(rows, verdicts, self.name)
