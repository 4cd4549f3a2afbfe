"""The captions that ``negatives_filter`` mines from, and which sample each belongs to.

A bank is a mapping of columns (``BANK_COLUMNS`` plus ``group`` and ``nodes`` from
:func:`~stages.negatives_mining.sample_groups`): the in-batch bank holds every caption of the
batch's anchors (:func:`batch_bank`); the whole-dataset bank is written from ``clip_score``
output (:func:`caption_bank`) and read back with :func:`read_bank`, which refuses one embedded
by another model. :func:`root_id` and :func:`image_key` say which sample and which image file a
row belongs to, so that mining never takes a caption of the anchor's own sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from access.io import MediaPathError, resolve_media_uri
from schemas.records import STATUS_OK
from stages.caption_edits import positive_captions
from stages.negatives_mining import sample_groups

BANK_COLUMNS = ("id", "root_id", "image_key", "text", "embedding")


def first_image(row: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in row.get("media") or [] if r and r.get("modality") == "image"), None)


def image_key(row: dict[str, Any]) -> str | None:
    """What identifies a row's image file: its sha256, else its resolved uri."""
    ref = first_image(row)
    if ref is None:
        return None
    try:
        return str(ref.get("sha256") or resolve_media_uri(ref["uri"], row.get("manifest_root")))
    except MediaPathError:  # media_check rejects such rows; here the raw uri is key enough
        return str(ref["uri"])


def root_id(row: dict[str, Any]) -> str:
    """The sample a row belongs to: augmented copies share their source's id."""
    return str(row["parent_id"] if row.get("parent_id") and row.get("negative_type") is None else row["id"])


def caption_bank(rows: pa.Table) -> pa.Table:
    """Whole-dataset caption bank for mining (``bank_path``) from ``clip_score`` output: one row
    per caption of every ok object row with ``clip_text_emb``; write it with
    ``pyarrow.parquet.write_table(bank, path)`` and keep the ``clip_model`` in its metadata."""
    out: dict[str, list[Any]] = {name: [] for name in BANK_COLUMNS}
    models = set()
    for row in rows.to_pylist():
        if row.get("status") != STATUS_OK or row.get("negative_type") is not None or not row.get("clip_text_emb"):
            continue
        models.add(row.get("clip_model"))
        for text, emb in zip(positive_captions(row), row["clip_text_emb"], strict=False):
            out["id"].append(row["id"])
            out["root_id"].append(root_id(row))
            out["image_key"].append(image_key(row))
            out["text"].append(text)
            out["embedding"].append(np.asarray(emb, np.float16))
    table = pa.table({**{k: out[k] for k in BANK_COLUMNS[:-1]},
                      "embedding": pa.array(out["embedding"], pa.list_(pa.float16()))})
    return table.replace_schema_metadata({"clip_model": ",".join(sorted(str(m) for m in models))})


def read_bank(path: str, model_id: str) -> dict[str, Any]:
    """The whole-dataset bank at ``path`` (Parquet, from :func:`caption_bank`); a bank
    embedded by another model than ``model_id`` is an error."""
    table = pq.read_table(path, columns=list(BANK_COLUMNS))
    model = (table.schema.metadata or {}).get(b"clip_model", b"").decode()
    if model and model != model_id:
        raise ValueError(f"caption bank {path} was embedded by {model}, not {model_id}")
    emb = table["embedding"].combine_chunks()
    bank: dict[str, Any] = {k: table[k].to_pylist() for k in BANK_COLUMNS[:-1]}
    bank["embedding"] = emb.values.to_numpy().reshape(len(emb), -1)
    bank["group"], bank["nodes"] = sample_groups(list(zip(bank["root_id"], bank["image_key"], strict=True)))
    return bank


def batch_bank(anchors: dict[str, dict[str, Any]], ids: list[str], captions: dict[str, list[str]],
               text_emb: dict[str, np.ndarray]) -> dict[str, Any]:
    """The in-batch bank: every caption of the anchors ``ids`` (rows in ``anchors``), with the
    text embeddings of the batch."""
    bank: dict[str, Any] = {"id": [], "root_id": [], "image_key": [], "text": []}
    for aid in ids:
        for text in captions[aid]:
            bank["id"].append(aid)
            bank["root_id"].append(root_id(anchors[aid]))
            bank["image_key"].append(image_key(anchors[aid]))
            bank["text"].append(text)
    bank["embedding"] = np.stack([text_emb[t] for t in bank["text"]])
    bank["group"], bank["nodes"] = sample_groups(list(zip(bank["root_id"], bank["image_key"], strict=True)))
    return bank
