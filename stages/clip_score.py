"""Stage ``clip_score``: CLIP (open_clip) similarities of images and texts, with embeddings.

Consumes the ``decoded_*`` image columns of ``decode_media`` and ``kind``, ``content``,
``captions``, ``boxes`` and ``items``. Produces, per kind (cosines in [-1, 1], float32):

- object: ``clip_caption_scores`` (the image against the content, markup stripped, then every
  caption) and ``clip_box_scores`` (each box crop against ``box_text`` with its label: the
  anchoring check); ``clip_score`` is the lowest caption score; with ``counterfactuals``,
  ``clip_counterfactual_gaps``: per caption, the best single-attribute alternative's score
  (``stages.counterfactuals``) minus the caption's;
- segment: ``clip_frame_scores`` (each sampled frame against the content sentence),
  ``clip_video_score_mean``/``_max``; ``clip_score`` is the mean;
- document: ``clip_doc_scores`` (images x sentences of the text items) and ``clip_doc_best``
  (each image's best sentence); ``clip_score`` is the lowest best;
- ``clip_image_emb``, ``clip_crop_emb``, ``clip_text_emb``, ``clip_label_emb``: unit-norm
  float16 embeddings in the order of the scores, so mining and metrics never recompute them,
  and ``clip_model`` (checkpoint and pin) saying which model made them.

Rejects with ``ERR_CROSS_MDL_FUSION`` a row with a non-finite embedding, and with
``ERR_CROSS_MDL_LOW_SCORE`` a row with a score under its threshold, absolute (``min_*``) or,
with ``keep_top_fraction``, under the batch quantile of ``clip_score`` per kind (DataComp's top
fraction; for a dataset quantile, score once without thresholds, compute
:func:`stages.scoring.top_fraction_threshold` over all scores and set ``min_*``), and an object
row with a caption that one of its counterfactuals outscores by more than
``counterfactual_margin`` (it is probably wrong in that attribute: an absolute threshold misses a
three-object caption with one wrong size). Features are norm-clipped to ``max_feature_norm``
before the cosine. The decoded image columns are nulled once used. Runs as an actor: the model
loads once in ``setup()``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.counterfactuals import Kind as CounterfactualKind
from stages.counterfactuals import counterfactuals
from stages.decode_media import IMAGE_COLUMNS, geometric_transform, image_spec
from stages.object_lexicon import caption_texts, strip_markup
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


class ClipScore(Stage):
    """CLIP scores and embeddings (see the module docstring)."""

    name: ClassVar[str] = "clip_score"
    params_model: ClassVar[type[StageParams]] = ClipScoreParams
    # Half a CPU by default: two scorer actors, the decode tasks and the reader fit on 2 cores;
    # on a GPU cluster the config sets num_gpus, actors and batch_size.
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=256, actors=(1, 1))
    output_fields: ClassVar[list[pa.Field]] = [
        pa.field("clip_score", pa.float32()),
        pa.field("clip_caption_scores", SCORES_TYPE),
        pa.field("clip_counterfactual_gaps", SCORES_TYPE),
        pa.field("clip_box_scores", SCORES_TYPE),
        pa.field("clip_frame_scores", SCORES_TYPE),
        pa.field("clip_video_score_mean", pa.float32()),
        pa.field("clip_video_score_max", pa.float32()),
        pa.field("clip_doc_scores", pa.list_(SCORES_TYPE)),
        pa.field("clip_doc_best", SCORES_TYPE),
        pa.field("clip_image_emb", EMB_TYPE),
        pa.field("clip_crop_emb", EMB_TYPE),
        pa.field("clip_text_emb", EMB_TYPE),
        pa.field("clip_label_emb", EMB_TYPE),
        pa.field("clip_model", pa.string()),
    ]
    error_code: ClassVar[ReasonCode] = ReasonCode.FUSION

    def setup(self) -> None:
        from access.models import load_open_clip

        p: ClipScoreParams = self.params  # type: ignore[assignment]
        self.device, self.bundle = load_scorer(p, load_open_clip)
        b = self.bundle
        self.spec = image_spec(b.image_size, b.resize_mode, b.interpolation, b.fill_color)
        self.model_id = model_id(p.checkpoint, p.checkpoint_sha256)
        self._warned = False

    # ---- model calls --------------------------------------------------------------------------
    def _pixels(self, blobs: list[bytes], spec: str | None) -> np.ndarray:
        size = self.bundle.image_size
        if spec == self.spec:
            return np.stack([np.frombuffer(b, np.uint8).reshape(size, size, 3) for b in blobs])
        # Decoded for another model: re-run this model's transform on the decoded pixels.
        from PIL import Image

        if not self._warned:
            log.warning("clip_score: images decoded as %s, the model wants %s; resizing again "
                        "(set decode_media's image settings to match)", spec, self.spec)
            self._warned = True
        b = self.bundle
        tf = geometric_transform(b.image_size, b.resize_mode, b.interpolation, b.fill_color)
        side = int(np.sqrt(len(blobs[0]) // 3))
        return np.stack([np.asarray(tf(Image.fromarray(
            np.frombuffer(x, np.uint8).reshape(side, side, 3)))) for x in blobs])

    def encode_images(self, array: np.ndarray) -> tuple[Any, np.ndarray]:
        import torch

        p: ClipScoreParams = self.params  # type: ignore[assignment]
        feats = []
        for start in range(0, len(array), p.forward_batch):
            x = self.bundle.model_input(torch.from_numpy(array[start:start + p.forward_batch]).to(self.device))
            with torch.inference_mode(), autocast(self.device, p.fp16):
                feats.append(self.bundle.model.encode_image(x).float())
        return unit_features(torch.cat(feats), p.max_feature_norm)

    def encode_texts(self, texts: list[str]) -> tuple[Any, np.ndarray]:
        import torch

        p: ClipScoreParams = self.params  # type: ignore[assignment]
        feats = []
        for start in range(0, len(texts), p.forward_batch):
            tokens = self.bundle.tokenizer(texts[start:start + p.forward_batch]).to(self.device)
            with torch.inference_mode(), autocast(self.device, p.fp16):
                feats.append(self.bundle.model.encode_text(tokens).float())
        return unit_features(torch.cat(feats), p.max_feature_norm)

    # ---- rows ---------------------------------------------------------------------------------
    def process(self, rows: pa.Table) -> pa.Table:
        p: ClipScoreParams = self.params  # type: ignore[assignment]
        names = ["kind", "content", "captions", "boxes", "items", *IMAGE_COLUMNS]
        data = rows.select(names).to_pylist()
        # Gather every image, crop and distinct text of the batch for few large forwards.
        images: list[bytes] = []
        specs: list[str | None] = []
        texts: dict[str, int] = {}
        plan: list[dict[str, Any] | None] = []
        for row in data:
            if not row["decoded_images"]:
                plan.append(None)
                continue
            txt, labels = row_texts(row, p.box_text)
            crops = row["decoded_crops"] or []
            entry: dict[str, Any] = {"img": list(range(len(images), len(images) + len(row["decoded_images"])))}
            images += row["decoded_images"]
            entry["crop"] = [len(images) + i if c else -1 for i, c in enumerate(crops)]
            images += [c for c in crops if c]
            specs += [row["decoded_image_spec"]] * (len(images) - len(specs))
            entry["txt"] = [texts.setdefault(t, len(texts)) for t in txt]
            entry["lab"] = [texts.setdefault(t, len(texts)) for t in labels]
            if p.counterfactuals and row["kind"] == "object":
                entry["alt"] = [[(texts.setdefault(c.text, len(texts)), c.edit)
                                 for c in counterfactuals(t, p.counterfactuals, txt)] for t in txt]
            plan.append(entry)
        results: list[dict[str, Any]] = [{} for _ in data]
        verdicts: list[Verdict | None] = [None] * len(data)
        if images:
            pix = np.concatenate([self._pixels(images[i:i + 1], specs[i]) for i in range(len(images))]) \
                if len(set(specs)) > 1 else self._pixels(images, specs[0])
            img_u, img_ok = self.encode_images(pix)
            img_u = img_u.cpu().numpy()
            if texts:
                txt_t, txt_ok = self.encode_texts(list(texts))
                txt_u = txt_t.cpu().numpy()
            else:  # no row has a text, so no row indexes txt_u
                txt_u, txt_ok = np.zeros((0, img_u.shape[1]), img_u.dtype), np.ones(0, bool)
            for i, (row, planned) in enumerate(zip(data, plan, strict=True)):
                if planned is not None:
                    results[i], verdicts[i] = self._score_row(row, planned, img_u, img_ok,
                                                              txt_u, txt_ok, p)
        verdicts = self._quantile_verdicts(data, results, verdicts, p)
        return self._write(rows, data, results, verdicts)

    def _score_row(self, row: dict[str, Any], e: dict[str, Any], img_u: np.ndarray,
                   img_ok: np.ndarray, txt_u: np.ndarray, txt_ok: np.ndarray,
                   p: ClipScoreParams) -> tuple[dict[str, Any], Verdict | None]:
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
                r["clip_counterfactual_gaps"], beaten = self._counterfactual_gaps(
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

    @staticmethod
    def _counterfactual_gaps(image: np.ndarray, caps: np.ndarray, alts: list[list[tuple[int, str]]],
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

    def _quantile_verdicts(self, data: list[dict[str, Any]], results: list[dict[str, Any]],
                           verdicts: list[Verdict | None], p: ClipScoreParams
                           ) -> list[Verdict | None]:
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

    def _write(self, rows: pa.Table, data: list[dict[str, Any]], results: list[dict[str, Any]],
               verdicts: list[Verdict | None]) -> pa.Table:
        p: ClipScoreParams = self.params  # type: ignore[assignment]
        for field in self.output_fields:
            values = [r.get(field.name) for r in results]
            if field.name == "clip_model":
                values = [self.model_id if r else None for r in results]
            if field.type == EMB_TYPE:
                rows = set_column(rows, field.name, embedding_array(values), field.type)
            else:
                rows = set_column(rows, field.name, values, field.type)
        if p.release_decoded:
            for name in IMAGE_COLUMNS:
                idx = rows.schema.get_field_index(name)
                rows = rows.set_column(idx, rows.schema.field(idx),
                                       pa.nulls(rows.num_rows, rows.schema.field(idx).type))
        return reject_rows(rows, verdicts, self.name)
