"""The release's ``audio_text`` metric: what ``clap_score`` measured, kept apart from the
image-text metrics (``similarity`` and ``retrieval`` stay image-text).

- ``kept`` / ``rejected``: the distribution of ``clap_score`` (a row's lowest clip cosine) over
  the input records (rows without a parent) that have one, kept vs rejected. The row counts and
  the rejects by stage/code are exact; the distributions are of a seeded sample of at most
  :data:`~pipeline.metrics.samples.SAMPLE_ROWS` rows.
- ``retrieval``: R@k audio->text and text->audio over a seeded sample (bottom-k by row hash) of at
  most ``recall_max_images`` kept input records with ``clap_audio_emb`` and ``clap_text_emb``:
  each clip against the text ``clap_score`` paired it with, every other clip's text a candidate.
  Texts with identical embeddings are one candidate (no model could rank one copy above the
  other); a text that differs but says the same (e.g. another direction word) counts against
  the match, as any other text does. Ties count against the match (``pipeline.metrics.retrieval``).
  The pairs are the release's own rows: held out from the model's training only in so far as
  the model (``models``, from ``clap_model``) never saw these records.

Absent columns put ``audio_text`` (or ``audio_text_retrieval``) under ``skipped`` with the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.metrics.retrieval import distribution, retrieval_ranks
from pipeline.metrics.retrieval import recall_from_ranks as recall
from pipeline.metrics.samples import HASH, SAMPLE_ROWS, bottom, concat, mask, narrow, ordered
from schemas.records import STATUS_OK

SCORE_COLUMN = "clap_score"
AUDIO_COLUMN, TEXT_COLUMN = "clap_audio_emb", "clap_text_emb"
MODEL_COLUMN = "clap_model"
MAX_MODELS = 10
PAIRS = ("Each kept clip against the text clap_score paired it with; texts with identical "
         "embeddings are one candidate, a different text that says the same counts against the "
         "match. The pairs are the release's own rows: held out only in so far as the model "
         "(models) was not trained on these records")


def clip_pairs(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row of each clip, audio vectors, text vectors)``: the clips of the rows whose audio and
    text lists have the same length, each clip's audio and text of the common width and finite."""
    audio = table[AUDIO_COLUMN].combine_chunks()
    text = table[TEXT_COLUMN].combine_chunks()
    n_audio = pc.fill_null(pc.list_value_length(audio), 0).to_numpy(zero_copy_only=False)
    n_text = pc.fill_null(pc.list_value_length(text), 0).to_numpy(zero_copy_only=False)
    keep = (n_audio == n_text) & (n_audio > 0)
    empty = np.empty((0, 0), np.float32)
    if not keep.any():
        return np.empty(0, np.int64), empty, empty
    rows = np.repeat(np.flatnonzero(keep), n_audio[keep])
    audio, text = pc.list_flatten(audio.filter(pa.array(keep))), pc.list_flatten(text.filter(pa.array(keep)))
    w_audio = pc.fill_null(pc.list_value_length(audio), 0).to_numpy(zero_copy_only=False)
    w_text = pc.fill_null(pc.list_value_length(text), 0).to_numpy(zero_copy_only=False)
    both = (w_audio == w_text) & (w_audio > 0)
    if not both.any():
        return np.empty(0, np.int64), empty, empty
    width = Counter(w_audio[both].tolist()).most_common(1)[0][0]
    same = pa.array(both & (w_audio == width))
    a = np.asarray(pc.list_flatten(audio.filter(same)).to_numpy(zero_copy_only=False), np.float32)
    t = np.asarray(pc.list_flatten(text.filter(same)).to_numpy(zero_copy_only=False), np.float32)
    a, t = a.reshape(-1, width), t.reshape(-1, width)
    finite = np.isfinite(a).all(axis=1) & np.isfinite(t).all(axis=1)
    return rows[np.asarray(same)][finite], a[finite], t[finite]


def audio_text_recall(audio: np.ndarray, text: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """R@k of clip ``i`` <-> text ``i``, identical text vectors merged into one candidate.

    The merged texts play the images of ``retrieval_ranks`` (each with one or more clips, as an
    image has captions): text->audio counts a text as found at its best-ranked clip."""
    unique, owner = np.unique(np.ascontiguousarray(text, np.float32), axis=0, return_inverse=True)
    t2a, a2t = retrieval_ranks(unique, audio, owner.reshape(-1))
    return {"clips": int(len(audio)), "texts": int(len(unique)),
            "audio_to_text": recall(a2t, ks), "text_to_audio": recall(t2a, ks)}


class AudioTextAccumulator:
    """Exact counts and two seeded samples; blocks merge in any order to the same result."""

    def __init__(self, max_pairs: int) -> None:
        self.max_pairs = max_pairs
        self.seen = False  # a block had a clap column
        self.rows: Counter[str] = Counter()  # scored input records: kept / rejected
        self.rejected_by: Counter[str] = Counter()  # stage/code of the scored rejected ones
        self.models: set[str] = set()
        self.candidates = 0  # kept input records with both embeddings
        self.scores: pa.Table | None = None
        self.pairs: pa.Table | None = None

    def add(self, table: pa.Table) -> None:
        """One block with its :data:`HASH` column."""
        names = table.schema.names
        if not {SCORE_COLUMN, AUDIO_COLUMN, TEXT_COLUMN} & set(names):
            return
        self.seen = True
        roots = mask(table, pc.is_null(table["parent_id"]))
        ok = pc.fill_null(pc.equal(roots["status"], STATUS_OK), False)
        if MODEL_COLUMN in names and len(self.models) < MAX_MODELS:
            found = pc.unique(pc.drop_null(roots[MODEL_COLUMN])).to_pylist()
            self.models.update(sorted(found)[:MAX_MODELS - len(self.models)])
        if SCORE_COLUMN in names:
            scored = mask(roots, pc.is_finite(pc.cast(roots[SCORE_COLUMN], pa.float64())))
            kept = pc.fill_null(pc.equal(scored["status"], STATUS_OK), False)
            n_kept = int(pc.sum(pc.cast(kept, pa.int64())).as_py() or 0)
            self.rows.update(kept=n_kept, rejected=scored.num_rows - n_kept)
            rejected = mask(scored, pc.invert(kept))
            self.rejected_by.update(f"{s}/{c}" for s, c in zip(rejected["reject_stage"].to_pylist(),
                                                              rejected["reject_code"].to_pylist(), strict=True))
            self.scores = bottom(concat(self.scores, narrow(scored, ["id", "status", SCORE_COLUMN, HASH])),
                                 SAMPLE_ROWS)
        if {AUDIO_COLUMN, TEXT_COLUMN} <= set(names):
            kept_roots = mask(roots, ok)
            pairs = mask(kept_roots, pc.and_(pc.is_valid(kept_roots[AUDIO_COLUMN]),
                                             pc.is_valid(kept_roots[TEXT_COLUMN])))
            self.candidates += pairs.num_rows
            self.pairs = bottom(concat(self.pairs, narrow(pairs, ["id", AUDIO_COLUMN, TEXT_COLUMN, HASH])),
                                self.max_pairs)

    def merge(self, other: AudioTextAccumulator) -> None:
        self.seen = self.seen or other.seen
        self.rows.update(other.rows)
        self.rejected_by.update(other.rejected_by)
        self.models = set(sorted(self.models | other.models)[:MAX_MODELS])
        self.candidates += other.candidates
        self.scores = bottom(concat(self.scores, other.scores), SAMPLE_ROWS)
        self.pairs = bottom(concat(self.pairs, other.pairs), self.max_pairs)

    def finish(self, values: dict[str, Any], skipped: dict[str, str], plots: Any, seed: int,
               ks: Sequence[int]) -> None:
        """``values["audio_text"]`` (or the skip reasons); the score arrays go to ``plots``."""
        if not self.seen:
            skipped["audio_text"] = (f"no {SCORE_COLUMN}, {AUDIO_COLUMN} or {TEXT_COLUMN} column in "
                                     "the table (run the clap_score stage)")
            return
        out: dict[str, Any] = {"source": f"{SCORE_COLUMN} (a row's lowest clip cosine, audio x text)",
                               "models": sorted(self.models)}
        scores = ordered(self.scores)
        if scores is None or scores.num_rows == 0:
            skipped["audio_text_scores"] = f"no input record has a finite {SCORE_COLUMN}"
        else:
            ok = np.asarray(pc.fill_null(pc.equal(scores["status"], STATUS_OK), False))
            s = pc.cast(scores[SCORE_COLUMN], pa.float64()).to_numpy(zero_copy_only=False)
            plots.clap_kept, plots.clap_rejected = s[ok], s[~ok]
            out.update(kept=distribution(s[ok]), rejected=distribution(s[~ok]),
                       rows={"kept": self.rows["kept"], "rejected": self.rows["rejected"]},
                       rejected_by_stage_code=dict(sorted(self.rejected_by.items())),
                       sampled_rows=scores.num_rows)
        out["retrieval"] = self._retrieval(skipped, seed, ks)
        if out["retrieval"] is None:
            del out["retrieval"]
        values["audio_text"] = out

    def _retrieval(self, skipped: dict[str, str], seed: int, ks: Sequence[int]) -> dict[str, Any] | None:
        pairs = ordered(self.pairs)
        if pairs is None:
            skipped["audio_text_retrieval"] = (f"no kept input record with {AUDIO_COLUMN} and "
                                               f"{TEXT_COLUMN}")
            return None
        pairs = pairs.take(pc.sort_indices(pairs, sort_keys=[("id", "ascending")]))
        _, audio, text = clip_pairs(pairs)
        if len(audio) < 2:
            skipped["audio_text_retrieval"] = (f"fewer than 2 kept clips with finite {AUDIO_COLUMN} and "
                                               f"{TEXT_COLUMN} of one width")
            return None
        return {**audio_text_recall(audio, text, ks), "pairs": PAIRS,
                "columns": {"audio": AUDIO_COLUMN, "text": TEXT_COLUMN},
                "sample": {"size": pairs.num_rows, "seed": seed, "candidates": self.candidates,
                           "max": self.max_pairs}}
