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
loads once in ``setup()``. The params, the per-row scores and the verdicts are
:mod:`stages.clip_rules`; this module embeds a batch and writes the columns.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from schemas.reason_codes import ReasonCode
from stages.base import Resources, Stage, StageParams, Verdict, reject_rows
from stages.clip_rules import ClipScoreParams, quantile_verdicts, row_texts, score_row
from stages.counterfactuals import counterfactuals
from stages.decode_media import IMAGE_COLUMNS, geometric_transform, image_spec
from stages.scoring import (
    EMB_TYPE,
    SCORES_TYPE,
    autocast,
    embedding_array,
    load_scorer,
    model_id,
    set_column,
    unit_features,
)

log = logging.getLogger(__name__)


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
                    results[i], verdicts[i] = score_row(row, planned, img_u, img_ok, txt_u, txt_ok, p)
        verdicts = quantile_verdicts(data, results, verdicts, p)
        return self._write(rows, data, results, verdicts)

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
