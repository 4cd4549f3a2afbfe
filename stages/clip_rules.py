"""What ``clip_score`` decides for each row, once the batch's images and texts are embedded.

:class:`ClipScoreParams` are the stage's settings and thresholds; :func:`row_texts` says which
texts of a row are scored against its images and which label texts against its box crops;
:func:`score_row` turns a row's unit-norm embeddings into its score columns and its verdict
(absolute thresholds and, with ``counterfactuals``, :func:`counterfactual_gaps`);
:func:`quantile_verdicts` applies ``keep_top_fraction`` per kind over the batch. The model, the
batching and the columns are the stage's (:mod:`stages.clip_score`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from pydantic import Field

from schemas.reason_codes import ReasonCode
from stages.base import Verdict
from stages.counterfactuals import Kind as CounterfactualKind
from stages.object_lexicon import caption_texts, strip_markup
from stages.scoring import ScorerParams, top_fraction_threshold

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


class ClipScoreParams(ScorerParams):
    box_text: str = Field(default="a photo of a {label}.", description="text of a box crop")
    min_caption_score: float | None = Field(default=None, ge=-1, le=1)
    min_box_score: float | None = Field(default=None, ge=-1, le=1)
    min_video_score: float | None = Field(default=None, ge=-1, le=1, description="on the frame mean")
    min_document_score: float | None = Field(default=None, ge=-1, le=1, description="lowest best")
    counterfactuals: list[CounterfactualKind] = Field(
        default_factory=list, description="object captions: attribute changes each caption is "
        "checked against (stages.counterfactuals); use only attributes the model knows")
    counterfactual_margin: float = Field(default=0.02, ge=0, le=2, description="reject a caption that "
                                         "an alternative outscores by more than this")


def row_texts(row: dict[str, Any], box_text: str) -> tuple[list[str], list[str]]:
    """(texts scored against the images, label texts scored against the crops) of a row."""
    kind = row["kind"]
    if kind == "object":
        texts = [" ".join(t.split()) for t in caption_texts(row["content"], row["captions"])]
        labels = [box_text.format(label=(b or {}).get("label") or "") for b in row["boxes"] or []]
        return texts, labels
    if kind == "segment":
        text = " ".join(strip_markup(row["content"] or "").split())
        return ([text] if text else []), []
    if kind == "document":
        sentences = [s for item in row["items"] or [] if item and item.get("type") == "text"
                     for s in _SENTENCE_RE.split(" ".join((item.get("text") or "").split())) if s]
        return sentences, []
    return [], []


def score_row(row: dict[str, Any], e: dict[str, Any], img_u: np.ndarray,
              img_ok: np.ndarray, txt_u: np.ndarray, txt_ok: np.ndarray,
              p: ClipScoreParams) -> tuple[dict[str, Any], Verdict | None]:
    """A row's score columns and its verdict, from the batch's unit-norm embeddings: ``e`` holds
    the row's indices into them (``img``, ``crop`` (-1: no crop), ``txt``, ``lab``, ``alt``)."""
    crops = [c for c in e["crop"] if c >= 0]
    if not (img_ok[e["img"]].all() and img_ok[crops].all()
            and txt_ok[e["txt"]].all() and txt_ok[e["lab"]].all()):
        return {}, Verdict(ReasonCode.FUSION, "non-finite CLIP embedding")
    image, text = img_u[e["img"]], (txt_u[e["txt"]] if e["txt"] else np.zeros((0, 1)))
    sim = image @ text.T if e["txt"] else np.zeros((len(image), 0), np.float32)
    r: dict[str, Any] = {"clip_image_emb": image, "clip_text_emb": text if e["txt"] else None}
    kind, verdict = row["kind"], None
    if kind == "object":
        caps = sim[0]
        box = [float(img_u[c] @ txt_u[t]) if c >= 0 else None
               for c, t in zip(e["crop"], e["lab"], strict=False)]
        r.update(clip_caption_scores=caps.tolist(), clip_box_scores=box or None,
                 clip_crop_emb=img_u[crops] if crops else None,
                 clip_label_emb=txt_u[e["lab"]] if e["lab"] else None)
        r["clip_score"] = float(caps.min()) if caps.size else None
        low = [(s, f"caption {j}") for j, s in enumerate(caps) if p.min_caption_score is not None
               and s < p.min_caption_score]
        beaten = None
        if "alt" in e:
            r["clip_counterfactual_gaps"], beaten = counterfactual_gaps(
                img_u[e["img"][0]], caps, e["alt"], txt_u, p.counterfactual_margin)
        low += [(s, f"box {j} ({(row['boxes'][j] or {}).get('label')!r})")
                for j, s in enumerate(box) if s is not None and p.min_box_score is not None
                and s < p.min_box_score]
        if low:
            s, what = min(low)
            limit = p.min_caption_score if what.startswith("caption") else p.min_box_score
            verdict = Verdict(ReasonCode.LOW_SCORE,
                              f"CLIP score of {what} is {s:.3f}, below {limit:g}")
        elif beaten:
            verdict = Verdict(ReasonCode.LOW_SCORE, beaten)
    elif kind == "segment" and sim.shape[1]:
        frames = sim[:, 0]
        r.update(clip_frame_scores=frames.tolist(), clip_video_score_mean=float(frames.mean()),
                 clip_video_score_max=float(frames.max()), clip_score=float(frames.mean()))
        if p.min_video_score is not None and frames.mean() < p.min_video_score:
            verdict = Verdict(ReasonCode.LOW_SCORE, f"CLIP video score (frame mean) is "
                              f"{frames.mean():.3f}, below {p.min_video_score:g}")
    elif kind == "document" and sim.shape[1]:
        best = sim.max(axis=1)
        r.update(clip_doc_scores=sim.tolist(), clip_doc_best=best.tolist(),
                 clip_score=float(best.min()))
        if p.min_document_score is not None and best.min() < p.min_document_score:
            j = int(best.argmin())
            verdict = Verdict(ReasonCode.LOW_SCORE, f"CLIP: image {j} matches no sentence "
                              f"(best {best[j]:.3f}, below {p.min_document_score:g})")
    return r, verdict


def counterfactual_gaps(image: np.ndarray, caps: np.ndarray, alts: list[list[tuple[int, str]]],
                        txt_u: np.ndarray, margin: float) -> tuple[list[float | None], str | None]:
    """Per caption, best counterfactual score minus the caption's (None: no alternative);
    and the message for the caption beaten by the most, if one is beaten by > ``margin``."""
    gaps: list[float | None] = []
    worst: tuple[float, str] | None = None
    for j, (score, options) in enumerate(zip(caps, alts, strict=True)):
        if not options:
            gaps.append(None)
            continue
        alt = txt_u[[i for i, _ in options]] @ image
        k = int(alt.argmax())
        gap = float(alt[k] - score)
        gaps.append(gap)
        if gap > margin and (worst is None or gap > worst[0]):
            worst = (gap, f"CLIP: caption {j} ({score:.3f}) is outscored by its counterfactual "
                          f"'{options[k][1]}' ({alt[k]:.3f}), by more than {margin:g}")
    return gaps, (worst[1] if worst else None)


def quantile_verdicts(data: list[dict[str, Any]], results: list[dict[str, Any]],
                      verdicts: list[Verdict | None], p: ClipScoreParams) -> list[Verdict | None]:
    if p.keep_top_fraction is None:
        return verdicts
    for kind in {row["kind"] for row in data}:
        idx = [i for i, row in enumerate(data) if row["kind"] == kind
               and results[i].get("clip_score") is not None and verdicts[i] is None]
        scores = np.array([results[i]["clip_score"] for i in idx], np.float64)
        cut = top_fraction_threshold(scores, p.keep_top_fraction)
        for i, s in zip(idx, scores, strict=True):
            if s < cut:
                verdicts[i] = Verdict(ReasonCode.LOW_SCORE, f"CLIP score {s:.3f} is under "
                                      f"the batch's top {p.keep_top_fraction:g} ({cut:.3f})")
    return verdicts
