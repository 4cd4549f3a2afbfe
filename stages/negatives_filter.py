"""Stage ``negatives_filter``: score negative pairs with CLIP, mine kNN negatives, drop false negatives.

Consumes ok rows. Anchors are object rows with an image that are not negatives; a negative row
(``negative_type`` set, ``parent_id`` = anchor id) is a copy of its anchor row, so it carries the
anchor's image and captions and needs no other row of the batch:

- text side (``negative_text``: rule-based, LLM, mined): ``negative_similarity`` = cos(anchor
  image, negative text); ``positive_similarity`` = the lowest cos(anchor image, caption);
- image side (``negative_media``: recoloured images): cos(negative image, ``positive_text``) and
  cos(anchor image, ``positive_text``);
- other negatives (segment_align's ``temporal_shift``: no image-text pair) pass unscored.

With ``mine_k > 0`` each anchor image mines its ``mine_k`` most similar captions of other samples
(in-batch, or the whole dataset with ``bank_path``, see :mod:`stages.negatives_bank`): rows
``<anchor>-mneg<k>``, ``negative_type="mined_text"``, ``negative_source_id``. Every candidate gets
``negative_verdict``: ``kept`` or the rule that dropped it (``stages.negatives_mining``:
same_sample, duplicate, ceiling, positive_aware, margin, over_cap); dropped ones are rejected
with ``ERR_CROSS_MDL_HARD_NEG``, scores in ``reject_detail``. The cap and ``negative_batch`` /
``negative_batch_fn_rate`` are per batch (a rate above ``max_false_negative_rate`` is logged; the
gate is :func:`~stages.negatives_mining.false_negative_gate`). A candidate whose image cannot be
read is rejected with ``ERR_CROSS_MDL_MEDIA``; anchor rows pass unchanged. The model loads once
per actor through ``access.models``; ``clip_score``'s ``clip_image_emb`` is reused when its
``clip_model`` is this checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from schemas.reason_codes import ReasonCode
from schemas.records import STATUS_OK, STATUS_REJECTED
from stages.base import Resources, Stage, StageParams
from stages.caption_edits import canonical_words, positive_captions
from stages.clip_embedder import ClipEmbedder, load_image
from stages.negatives_bank import batch_bank, first_image, image_key, read_bank, root_id
from stages.negatives_mining import (
    DUPLICATE,
    FALSE_NEGATIVE_VERDICTS,
    KEPT,
    NEGATIVE_FIELDS,
    SCORE_FIELDS,
    FilterRules,
    cap_per_positive,
    drop_detail,
    false_negative_rate,
    false_negative_verdicts,
    mine_topk,
    normalize_rows,
)
from stages.scoring import ModelParams

__all__ = ["NegativesFilter", "false_negative_rate"]
log = logging.getLogger(__name__)
MINED_TYPE = "mined_text"


class NegativesFilterParams(ModelParams):
    """Model (an open_clip checkpoint, as clip_score's), rules, mining and the per-batch
    false-negative limit."""

    ratio: float = Field(default=0.95, gt=0, le=1, description="keep only s_neg < ratio * s_pos (lowest positive)")
    ceiling: float = Field(default=0.75, ge=-1, le=1, description="keep only s_neg < ceiling")
    margin: float | None = Field(default=None, ge=0, le=2, description="keep only s_pos - s_neg >= margin")
    max_per_positive: int = Field(default=2, ge=1, description="kept negatives per positive pair (and side)")
    mine_k: int = Field(default=4, ge=0, le=256, description="kNN candidates mined per anchor image (0: off)")
    bank_path: str | None = Field(default=None, description="whole-dataset caption bank (Parquet); None: in-batch")
    duplicate_text_cosine: float | None = Field(default=None, gt=0, le=1, description=(
        "also a near-duplicate: cos(negative text, a positive caption) >= this (off: CLIP text embeddings "
        "of one-word edits are this close too)"))
    duplicate_image_cosine: float | None = Field(default=None, gt=0, le=1, description="cos(edited, anchor image)")
    max_false_negative_rate: float = Field(default=0.5, ge=0, le=1, description="per batch; above it is logged")


class NegativesFilter(Stage):
    """False-negative control and kNN mining on CLIP embeddings (see the module docstring)."""

    name: ClassVar[str] = "negatives_filter"
    params_model: ClassVar[type[StageParams]] = NegativesFilterParams
    # Fractional CPUs: a whole-CPU actor can starve the read tasks of a small local Ray.
    resources: ClassVar[Resources] = Resources(num_cpus=0.5, batch_size=256, actors=(1, 1))
    output_fields: ClassVar[tuple[pa.Field, ...]] = NEGATIVE_FIELDS + SCORE_FIELDS
    error_code: ClassVar[ReasonCode] = ReasonCode.HARD_NEG
    params: NegativesFilterParams

    def setup(self) -> None:
        p = self.params
        self.embedder = ClipEmbedder(p)
        self.rules = FilterRules(p.ratio, p.ceiling, p.margin)
        self.bank: dict[str, Any] | None = read_bank(p.bank_path, self.embedder.model_id) if p.bank_path else None

    def process(self, rows: pa.Table) -> pa.Table:
        records = rows.to_pylist()
        anchors: dict[str, dict[str, Any]] = {}  # anchor id -> a row carrying its image and captions
        cands = []
        for i, row in enumerate(records):
            if row.get("negative_type") is None:
                if row.get("kind") == "object" and first_image(row) is not None:
                    anchors.setdefault(row["id"], row)
            elif row.get("negative_text") or row.get("negative_media"):
                anchors.setdefault(row["parent_id"], row)
                cands.append(i)
        if not anchors:
            return rows
        emb = self._embed(anchors, [records[i] for i in cands])
        mined = self._mine(anchors, emb) if self.params.mine_k else []
        everything = [records[i] for i in cands] + mined
        self._judge(everything, emb)
        out = pa.Table.from_pylist(records, schema=rows.schema)
        return pa.concat_tables([out, pa.Table.from_pylist(mined, schema=rows.schema)]) if mined else out

    # ---- embeddings ---------------------------------------------------------------------------
    def _embed(self, anchors: dict[str, dict[str, Any]], cands: list[dict[str, Any]]) -> dict[str, Any]:
        e = self.embedder
        emb: dict[str, Any] = {"img": {}, "txt": {}, "neg_img": {}, "bad": {}}
        load: list[tuple[str, Any]] = []
        for aid, row in anchors.items():
            reuse = row.get("clip_image_emb") if row.get("clip_model") == e.model_id else None
            if reuse:
                emb["img"][aid] = normalize_rows(np.asarray(reuse[:1], np.float32))[0]
                continue
            try:
                load.append((aid, load_image(first_image(row)["uri"], row.get("manifest_root"))))  # type: ignore[index]
            except Exception as exc:  # noqa: BLE001 - an unreadable image fails its candidates only
                emb["bad"][aid] = f"anchor image unreadable: {type(exc).__name__}: {exc}"[:300]
        for (aid, _), vec in zip(load, e.embed_images([im for _, im in load]), strict=True):
            emb["img"][aid] = vec
        neg_load: list[tuple[str, Any]] = []
        for row in cands:
            if row.get("negative_media"):
                try:
                    neg_load.append((row["id"], load_image(row["negative_media"], row.get("manifest_root"))))
                except Exception as exc:  # noqa: BLE001
                    emb["bad"][row["id"]] = f"negative image unreadable: {type(exc).__name__}: {exc}"[:300]
        for (rid, _), vec in zip(neg_load, e.embed_images([im for _, im in neg_load]), strict=True):
            emb["neg_img"][rid] = vec
        emb["caps"] = {aid: positive_captions(row) for aid, row in anchors.items()}
        texts = {t for caps in emb["caps"].values() for t in caps}
        texts |= {r["negative_text"] for r in cands if r.get("negative_text")}
        texts |= {r["positive_text"] for r in cands if r.get("positive_text")}
        ordered = sorted(texts)
        emb["txt"] = dict(zip(ordered, e.embed_texts(ordered), strict=True))
        return emb

    def _lowest_positive(self, aid: str, emb: dict[str, Any]) -> tuple[float, str] | None:
        caps = emb["caps"].get(aid) or []
        if aid not in emb["img"] or not caps:
            return None
        sims = [float(emb["txt"][c] @ emb["img"][aid]) for c in caps]
        at = int(np.argmin(sims))
        return sims[at], caps[at]

    # ---- mining -------------------------------------------------------------------------------
    def _mine(self, anchors: dict[str, dict[str, Any]], emb: dict[str, Any]) -> list[dict[str, Any]]:
        p = self.params
        real = [aid for aid, row in anchors.items() if row.get("negative_type") is None and aid in emb["img"]
                and self._lowest_positive(aid, emb) is not None]
        if not real:
            return []
        bank = self.bank if self.bank is not None else batch_bank(anchors, real, emb["caps"], emb["txt"])
        owners = {oid: n for n, oid in enumerate(dict.fromkeys(bank["id"] + real))}
        top = mine_topk(np.stack([emb["img"][a] for a in real]), bank["embedding"], p.mine_k,
                        query_owner=[owners[a] for a in real], key_owner=[owners[o] for o in bank["id"]])
        mined = []
        for qi, aid in enumerate(real):
            row = anchors[aid]
            _, low_text = self._lowest_positive(aid, emb)  # type: ignore[misc]
            key = image_key(row)
            group = bank["nodes"].get(f"r:{root_id(row)}", bank["nodes"].get(f"i:{key}", -1))
            for rank, j in enumerate(top.indices[qi]):
                if j < 0:
                    continue
                text = bank["text"][j]
                same = bank["group"][j] == group or bank["root_id"][j] == root_id(row) or (
                    bank["image_key"][j] is not None and bank["image_key"][j] == key)
                emb["txt"].setdefault(text, normalize_rows(np.asarray(bank["embedding"][j:j + 1], np.float32))[0])
                mined.append({
                    **row, "id": f"{aid[:116]}-mneg{rank}", "parent_id": aid, "status": STATUS_OK,
                    "reject_stage": None, "reject_code": None, "reject_detail": None,
                    "negative_type": MINED_TYPE, "negative_text": text, "negative_media": None,
                    "positive_text": low_text, "negative_source_id": bank["id"][j],
                    "negative_edit": f"kNN rank {rank + 1} of {p.mine_k}", "_same_sample": same,
                })
        return mined

    # ---- verdicts -----------------------------------------------------------------------------
    def _judge(self, cands: list[dict[str, Any]], emb: dict[str, Any]) -> None:
        """Score every candidate in place and set its verdict, status and reject columns."""
        p = self.params
        scored: list[dict[str, Any]] = []
        s_neg, s_pos, same, dup, keys = [], [], [], [], []
        for row in cands:
            aid = row["parent_id"]
            problem = emb["bad"].get(row["id"]) or emb["bad"].get(aid)
            low = self._lowest_positive(aid, emb)
            if problem or low is None:
                row.update(status=STATUS_REJECTED, reject_stage=self.name, reject_code=str(ReasonCode.MEDIA),
                           reject_detail=problem or "anchor has no image or no caption to score against")
                row.pop("_same_sample", None)
                continue
            image = emb["img"][aid]
            if row.get("negative_text"):
                neg = emb["txt"][row["negative_text"]]
                s_neg.append(float(neg @ image))
                s_pos.append(low[0])
                positives = {canonical_words(c) for c in emb["caps"][aid]}
                near = max(float(neg @ emb["txt"][c]) for c in emb["caps"][aid])
                dup.append(canonical_words(row["negative_text"]) in positives or (
                    p.duplicate_text_cosine is not None and near >= p.duplicate_text_cosine))
                side = "text"
            else:
                caption = emb["txt"][row["positive_text"]]
                neg_img = emb["neg_img"][row["id"]]
                s_neg.append(float(neg_img @ caption))
                s_pos.append(float(image @ caption))
                dup.append(p.duplicate_image_cosine is not None and float(neg_img @ image) >= p.duplicate_image_cosine)
                side = "image"
            same.append(bool(row.pop("_same_sample", False)))
            keys.append((aid, row.get("positive_text"), side))
            scored.append(row)
        if not scored:
            return
        verdicts = false_negative_verdicts(np.array(s_neg), np.array(s_pos), np.array(same), np.array(dup), self.rules)
        verdicts = cap_per_positive(keys, np.array(s_neg), verdicts, p.max_per_positive)
        fn = int(sum(v in FALSE_NEGATIVE_VERDICTS for v in verdicts))
        rate = fn / len(scored)
        batch = "nf-" + hashlib.sha256("\n".join(r["id"] for r in scored).encode()).hexdigest()[:12]
        level = logging.WARNING if rate > p.max_false_negative_rate else logging.INFO
        log.log(level, "negatives_filter: batch %s: %d of %d candidates dropped as false negatives (%.3f, limit %g)",
                batch, fn, len(scored), rate, p.max_false_negative_rate)
        for row, verdict, sn, sp in zip(scored, verdicts, s_neg, s_pos, strict=True):
            row.update(negative_similarity=sn, positive_similarity=sp, negative_verdict=str(verdict),
                       negative_batch=batch, negative_batch_fn_rate=rate)
            if verdict != KEPT:
                detail = drop_detail(str(verdict), sn, sp, self.rules, p.max_per_positive)
                if verdict == DUPLICATE and row.get("negative_text"):
                    detail += f": {row['negative_text'][:120]!r}"
                row.update(status=STATUS_REJECTED, reject_stage=self.name, reject_code=str(ReasonCode.HARD_NEG),
                           reject_detail=detail)
