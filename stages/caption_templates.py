"""Template captions: one sentence attached to many visually distinct samples.

A purchased driving dataset described red-, yellow- and green-light intersections with one
copied sentence; each row looked plausible, only the dataset shows the shortcut. Captions are
grouped by :func:`normalise_caption` (case, whitespace, numbers and markup folded); within a
group, rows are ranked best-scoring first and counted as *uses* by image: a row whose image
cosine to a kept use is at least ``distinct_below`` is that use again (a copy, a crop: the
near-duplicate check handles those), any other row is a new use. The first ``max_uses`` uses
are kept; the rows of every later use are ``ERR_CROSS_MDL_TEMPLATE``. Only the kept uses are
compared against, so a group of n rows costs n x ``max_uses`` cosines, never n x n.
"""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import pyarrow as pa

from schemas.reason_codes import ReasonCode
from stages.dataset_verdicts import unit_matrix, verdict_table
from stages.object_lexicon import strip_markup

_NUMBER_RE = re.compile(r"\d+(?:[.,:]\d+)*")
_EDGE_PUNCT = " \t\n.,;:!?\"'()[]"
TEMPLATE_DETAIL_RE = re.compile(r'^template caption ("(?:[^"\\]|\\.)*") carried by (\d+) rows')
GROUP_SCHEMA = pa.schema([("key", pa.string()), ("ref", pa.string()), ("id", pa.string()),
                          ("score", pa.float64()), ("emb", pa.list_(pa.float16())),
                          ("image", pa.string())])


def normalise_caption(text: str | None) -> str | None:
    """The grouping key of a caption: markup stripped (media spans removed, ``<box>x</box>`` ->
    x), NFKC, case-folded, every number -> ``#``, whitespace collapsed, punctuation at the ends
    dropped. None for a text that is empty once folded."""
    if not text:
        return None
    folded = unicodedata.normalize("NFKC", strip_markup(text)).casefold()
    folded = " ".join(_NUMBER_RE.sub("#", folded).split()).strip(_EDGE_PUNCT)
    return folded or None


def template_detail(key: str, rows: int, max_uses: int, distinct_below: float,
                    kept_ids: list[str]) -> str:
    """The reject detail; :data:`TEMPLATE_DETAIL_RE` reads the caption and count back."""
    shown = ", ".join(kept_ids[:3]) + (", ..." if len(kept_ids) > 3 else "")
    return (f"template caption {json.dumps(key[:160], ensure_ascii=False)} carried by {rows} rows: "
            f"more than {max_uses} visually distinct uses (image cosine < {distinct_below:g}); "
            f"kept the {max_uses} best-scoring ({shown})")


def explode_texts(sig: pa.Table, emb_column: str, texts: str) -> pa.Table:
    """(key, ref, id, score, emb, image): one row per distinct text of each signature with an image
    embedding; ``texts`` is ``content`` or ``all`` (content and extra captions)."""
    emb = sig[emb_column]
    keep = [i for i, ok in enumerate(emb.is_valid().to_pylist()) if ok]
    sig = sig.take(keep)
    contents = sig["content_key"].to_pylist()
    captions = sig["caption_keys"].to_pylist() if texts == "all" else [[]] * sig.num_rows
    index: list[int] = []
    keys: list[str] = []
    for i, (content, caps) in enumerate(zip(contents, captions, strict=True)):
        for key in dict.fromkeys(k for k in [content, *(caps or [])] if k):
            index.append(i)
            keys.append(key)
    picked = sig.take(index)
    return pa.Table.from_arrays([pa.array(keys, pa.string()), picked["ref"], picked["id"],
                                 picked["score"], picked[emb_column], picked["image"]],
                                schema=GROUP_SCHEMA)


def rank_order(scores: np.ndarray, ids: list[str], refs: list[str]) -> np.ndarray:
    """Best-scoring first (a missing score last), then smallest id, then reference."""
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.array(sorted(range(len(ids)), key=lambda i: (key[i], ids[i], refs[i])), np.int64)


def template_verdicts(group: pa.Table, max_uses: int, distinct_below: float) -> pa.Table:
    """Verdicts for one caption group (rows of :data:`GROUP_SCHEMA` sharing ``key``)."""
    if group.num_rows <= max_uses:
        return verdict_table([], "template", ReasonCode.TEMPLATE, [])
    ids, refs = group["id"].to_pylist(), group["ref"].to_pylist()
    order = rank_order(group["score"].to_numpy(zero_copy_only=False), ids, refs)
    emb = unit_matrix(group["emb"].take(pa.array(order)))
    leaders: list[int] = []  # positions in ``order`` of the kept uses
    start = len(order)
    for pos in range(len(order)):
        if leaders and float((emb[leaders] @ emb[pos]).max()) >= distinct_below:
            continue  # the same scene as a kept use
        if len(leaders) == max_uses:
            start = pos
            break
        leaders.append(pos)
    if start == len(order):
        return verdict_table([], "template", ReasonCode.TEMPLATE, [])
    rest = np.arange(start, len(order))
    beyond = rest[(emb[rest] @ emb[leaders].T).max(axis=1) < distinct_below]
    kept_ids = [ids[int(order[p])] for p in leaders]
    detail = template_detail(group["key"][0].as_py(), group.num_rows, max_uses, distinct_below,
                             kept_ids)
    images = group["image"].to_pylist()
    return verdict_table([refs[int(order[p])] for p in beyond], "template", ReasonCode.TEMPLATE,
                         [detail] * len(beyond), images=[images[int(order[p])] for p in beyond])
