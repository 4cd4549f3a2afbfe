"""The dataset card of a release: ``README.md`` with a ``configs:`` entry per kind, the
features of each, and a description of every column (also written into the Parquet field
metadata), so that ``datasets.load_dataset(<release>)`` loads the kept rows of each kind.

The release writer calls, once the shards are written (and before ``manifest.json``):

    card = card_markdown(dataset, version, configs, licenses=..., counts=manifest["counts"])
    publisher.put("README.md", card.encode())

with ``configs = [CardConfig("object", ["data/object-*.parquet"], schema_of_the_object_shards), ...,
CardConfig("negatives", ["negatives/pairs-*.parquet"], ...), CardConfig("rejects",
["rejects/*/*/part-*.parquet"], ...)]``: a config per kind (the first is the default), negatives
and rejects as configs of their own, so that no glob mixes them. ``describe_schema`` is what
``kind_schemas.shard_table`` puts into each shard's schema.

Features are written in the card's YAML form (``dataset_info.features``) from the Arrow schema by
:func:`hf_features`; a test holds them equal to what ``datasets.Features.from_arrow_schema``
writes, without the release needing ``datasets``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import yaml

DESCRIPTIONS: dict[str, str] = {
    "id": "unique sample id ([A-Za-z0-9_-], at most 128)",
    "kind": "object | segment | document | text",
    "content": "text with placeholder spans (grammar v1); <box>label</box> anchors a word to a box",
    "media": "media refs in span order: modality, uri (relative to the release), sha256, size, timing",
    "media_bytes": "the bytes of each media ref, in the order of media (releases built with embedded media)",
    "negative_media": "uri of the negative pair's image (relative to the release, as media)",
    "negative_media_bytes": "the bytes of negative_media (releases built with embedded media)",
    "source": "where the sample comes from",
    "license": "licence of the sample",
    "placeholder_version": "placeholder grammar version (v1)",
    "review_status": "unreviewed | sampled | approved | rejected",
    "boxes": "object boxes: label, bbox (4 numbers), format (pascal_voc | coco | yolo | albumentations)",
    "boxes_xyxy": "the boxes in pixel x1, y1, x2, y2",
    "captions": "extra captions of the same image",
    "laterality": "left/right has physical meaning (never mirror-augmented)",
    "start_us": "segment start on the media timeline, integer microseconds",
    "duration_us": "segment duration, integer microseconds",
    "subtitles": "timed subtitles: start_us, duration_us, text (microseconds on the media timeline)",
    "words": "timed words: start_us, duration_us, text",
    "items": "document items in source order: type, text, media_index, page, bbox",
    "parent_id": "the row this one was derived from (augmentation, chunking, negatives)",
    "source_ref": "manifest:line the row was read from",
    "status": "ok (kept) or rejected",
    "reject_stage": "stage that rejected the row",
    "reject_code": "reason code (ERR_CROSS_MDL_*)",
    "reject_detail": "why, in one sentence",
    "release_part": "data (kept training rows), negatives (hard-negative pairs) or rejects",
    "chair_i": "hallucinated object mentions / object mentions of the sample",
    "chair_s": "captions with a hallucination / captions of the sample",
    "clip_score": "CLIP image-text similarity of the content",
    "clip_caption_scores": "CLIP similarity of each caption",
    "clip_counterfactual_gaps": "score of the caption minus its best single-attribute counterfactual",
    "clip_box_scores": "CLIP similarity of each box crop to its label",
    "clip_image_emb": "CLIP image embedding (float16)",
    "clip_crop_emb": "CLIP embeddings of the box crops (float16)",
    "clip_text_emb": "CLIP text embeddings of the captions (float16)",
    "clip_label_emb": "CLIP text embeddings of the box labels (float16)",
    "clip_model": "CLIP checkpoint that scored the row",
    "clap_score": "CLAP audio-text similarity",
    "clap_audio_emb": "CLAP audio embedding (float16)",
    "clap_text_emb": "CLAP text embeddings (float16)",
    "clap_model": "CLAP checkpoint that scored the row",
    "av_offset_us": "estimated audio-video offset (positive: audio lags), microseconds",
    "av_offset_score": "peak normalised correlation behind av_offset_us",
    "negative_type": "how the negative was made (caption swap, hue shift, temporal shift, ...)",
    "negative_text": "the negative caption",
    "positive_text": "the caption it negates",
    "negative_similarity": "model similarity of the negative pair",
    "positive_similarity": "model similarity of the positive pair",
}


def description(name: str) -> str:
    return DESCRIPTIONS.get(name, f"column {name} (added by a stage)")


def describe_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each field's ``description`` in its metadata (Parquet keeps it)."""
    return pa.schema([f.with_metadata({**(f.metadata or {}), b"description": description(f.name).encode()})
                      for f in schema], metadata=schema.metadata)


_DTYPES = {pa.string(): "string", pa.large_string(): "large_string", pa.bool_(): "bool", pa.int8(): "int8",
           pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64", pa.uint8(): "uint8",
           pa.uint16(): "uint16", pa.uint32(): "uint32", pa.uint64(): "uint64", pa.float16(): "float16",
           pa.float32(): "float32", pa.float64(): "float64", pa.binary(): "binary", pa.large_binary(): "large_binary",
           pa.null(): "null"}


def _feature(t: pa.DataType) -> Any:
    if t in _DTYPES:
        return _DTYPES[t]
    if pa.types.is_struct(t):
        return [{"name": t.field(i).name, **_typed(t.field(i).type)} for i in range(t.num_fields)]
    if pa.types.is_fixed_size_list(t):
        return {"list": _feature(t.value_type), "length": t.list_size}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _feature(t.value_type)}
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}{', tz=' + t.tz if t.tz else ''}]"
    raise ValueError(f"no dataset-card feature for Arrow type {t}")


def _typed(t: pa.DataType) -> dict[str, Any]:
    feature = _feature(t)
    if isinstance(feature, str):
        return {"dtype": feature}
    if isinstance(feature, list):  # a struct: its fields
        return {"struct": feature}
    return dict(feature)


def hf_features(schema: pa.Schema) -> list[dict[str, Any]]:
    """The ``features`` list of a card's ``dataset_info`` for ``schema``."""
    return [{"name": f.name, **_typed(f.type)} for f in schema]


@dataclass(frozen=True)
class CardConfig:
    """One ``configs:`` entry: its name, the data files (globs relative to the release) and the
    schema their shards share."""

    name: str
    paths: Sequence[str]
    schema: pa.Schema


def card_markdown(dataset: str, version: str, configs: Sequence[CardConfig], *,
                  licenses: Sequence[str] = (), counts: Mapping[str, Any] | None = None,
                  media: str = "refer") -> str:
    """The whole ``README.md``: YAML front matter (configs, features, licence), then the card."""
    if not configs:
        raise ValueError("a dataset card needs at least one config")
    front: dict[str, Any] = {
        "configs": [{"config_name": c.name, "data_files": [{"split": "train", "path": list(c.paths)}],
                     **({"default": True} if i == 0 else {})} for i, c in enumerate(configs)],
        "dataset_info": [{"config_name": c.name, "features": hf_features(c.schema)} for c in configs],
    }
    unique = sorted(set(licenses))
    front["license"] = "other" if len(unique) != 1 else unique[0].lower()
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {dataset} {version}", "",
             "Built by xmodal: every kept row passed the binding checks; every rejected row is in "
             "`rejects/` with its reason code.", "",
             "```python", "from datasets import load_dataset",
             f"ds = load_dataset(\"path/to/{dataset}/{version}\", \"{configs[0].name}\")   # one config per kind",
             "```", ""]
    if counts:
        lines += [f"Rows: {counts.get('kept', '?')} kept, {counts.get('rejected', '?')} rejected "
                  f"(of {counts.get('input_records', '?')} input records).", ""]
    lines += {"copy": ["Media are in `media/` and referenced relative to the release: a copied release opens "
                       "them.", ""],
              "embed": ["Media bytes are in the `media_bytes` column, in the order of `media`.", ""],
              "relative": ["Media URIs are relative to the release folder (URIs with a scheme as they are): the "
                           "release opens its media when it moves together with them.", ""]}.get(
        media, ["Media URIs point at the files the release was built from.", ""])
    if unique:
        lines += ["Licences: " + ", ".join(f"`{x}`" for x in unique) + ".", ""]
    lines += ["## Configs", "", "| config | files | rows are |", "|---|---|---|"]
    lines += [f"| `{c.name}` | `{'`, `'.join(c.paths)}` | {_what(c.name)} |" for c in configs]
    for c in configs:
        lines += ["", f"## Columns of `{c.name}`", "", "| column | type | description |", "|---|---|---|"]
        lines += [f"| `{f.name}` | `{f.type}` | {description(f.name)} |" for f in c.schema]
    return "\n".join(lines) + "\n"


def _what(name: str) -> str:
    return {"negatives": "hard-negative pairs (not training rows)",
            "rejects": "rejected rows with reject_stage, reject_code, reject_detail"}.get(name, f"kept `{name}` rows")
