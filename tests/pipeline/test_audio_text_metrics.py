"""The ``audio_text`` (CLAP) release metric: R@k of known embeddings, the kept vs rejected
``clap_score`` distributions, merging blocks, the seeded sample, skip reasons, the report's
section, and a streamed release whose manifest carries ``metrics.audio_text``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.metrics.accumulate import MetricsAccumulator
from pipeline.metrics.release import ReleaseMetrics, compute_release_metrics
from pipeline.release.report import render_report
from pipeline.release.writer import reconcile
from pipeline.run.config import MetricsConfig
from schemas.records import ROW_SCHEMA
from stages.scoring import EMB_TYPE

LOW = "ERR_CROSS_MDL_LOW_SCORE"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clap_table(audio: list[np.ndarray | None], text: list[np.ndarray | None], scores: list[float | None],
               status: list[str] | None = None, parent: list[str | None] | None = None) -> pa.Table:
    """Segment rows ``s000...`` with one clip each (``audio[i]`` is (clips, dim) or None)."""
    n = len(scores)
    status = status or ["ok"] * n
    parent = parent or [None] * n
    base = [{"id": f"s{i:03d}", "kind": "segment", "content": "x", "status": status[i], "source": "t",
             "license": "CC0-1.0", "parent_id": parent[i],
             "reject_code": None if status[i] == "ok" else LOW,
             "reject_stage": None if status[i] == "ok" else "clap_score"} for i in range(n)]
    table = pa.Table.from_pylist(base, schema=ROW_SCHEMA)

    def emb(v: np.ndarray | None) -> list[list[float]] | None:
        return None if v is None else np.atleast_2d(v).astype(np.float16).tolist()

    return (table.append_column("clap_score", pa.array(scores, pa.float32()))
            .append_column("clap_audio_emb", pa.array([emb(a) for a in audio], EMB_TYPE))
            .append_column("clap_text_emb", pa.array([emb(t) for t in text], EMB_TYPE))
            .append_column("clap_model", pa.array(["tiny@abc"] * n, pa.string())))


def metrics(table: pa.Table, cfg: MetricsConfig | None = None) -> ReleaseMetrics:
    return compute_release_metrics(table, reconcile(table, sum(p is None for p in table["parent_id"].to_pylist())),
                                   [], cfg)


def pairs(n: int, dim: int = 16, seed: int = 0, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = unit(rng.normal(size=(n, dim)))
    audio = unit(text + rng.normal(scale=noise, size=text.shape)) if noise else text.copy()
    return audio, text


def test_perfect_pairs_are_found_and_shuffled_texts_are_not() -> None:
    audio, text = pairs(40)
    m = metrics(clap_table(list(audio), list(text), [1.0] * 40))
    r = m.values["audio_text"]["retrieval"]
    assert (r["clips"], r["texts"]) == (40, 40)
    assert r["audio_to_text"] == r["text_to_audio"] == {"r@1": 1.0, "r@5": 1.0, "r@10": 1.0}
    shuffled = text[np.random.default_rng(1).permutation(40)]
    r = metrics(clap_table(list(audio), list(shuffled), [0.0] * 40)).values["audio_text"]["retrieval"]
    assert r["audio_to_text"]["r@1"] <= 0.1 and r["text_to_audio"]["r@1"] <= 0.1
    assert r["sample"] == {"size": 40, "seed": 0, "candidates": 40, "max": 5000}
    assert "held out only in so far as the model" in r["pairs"]


def test_identical_texts_are_one_candidate_and_a_row_may_have_several_clips() -> None:
    audio, text = pairs(10)
    text[1] = text[0]  # two clips with the same text: neither copy could rank above the other
    audio[1] = unit(text[0] + np.full(16, 0.05))
    rows_audio: list[np.ndarray | None] = [audio[:2], *list(audio[2:])]
    rows_text: list[np.ndarray | None] = [text[:2], *list(text[2:])]
    r = metrics(clap_table(rows_audio, rows_text, [1.0] * 9)).values["audio_text"]["retrieval"]
    assert (r["clips"], r["texts"]) == (10, 9)
    assert r["audio_to_text"]["r@1"] == 1.0 and r["text_to_audio"]["r@1"] == 1.0


def test_kept_and_rejected_scores_and_their_histograms() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, None, 0.95]
    status = ["ok", "ok", "ok", "ok", "rejected", "rejected", "ok", "ok"]
    parent = [None] * 7 + ["s000"]  # a derived row is not an input record
    audio, text = pairs(8, noise=0.5)
    m = metrics(clap_table(list(audio), list(text), scores, status, parent))
    a = m.values["audio_text"]
    assert a["rows"] == {"kept": 4, "rejected": 2} and a["sampled_rows"] == 6
    assert a["rejected_by_stage_code"] == {f"clap_score/{LOW}": 2}
    assert a["kept"]["count"] == 4 and a["kept"]["median"] == pytest.approx(0.75)
    assert a["rejected"]["count"] == 2 and a["rejected"]["mean"] == pytest.approx(0.15)
    assert sum(a["kept"]["histogram"]["counts"]) == 4 and sum(a["rejected"]["histogram"]["counts"]) == 2
    assert sorted(m.plots.clap_kept.tolist()) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    assert a["models"] == ["tiny@abc"]
    # the retrieval pool is the kept input records with both embeddings (the null score row too)
    assert a["retrieval"]["sample"]["candidates"] == 5
    json.dumps(m.to_json())


def test_blocks_merged_in_any_order_equal_one_block() -> None:
    audio, text = pairs(30, noise=0.8, seed=3)
    status = ["rejected" if i % 4 == 0 else "ok" for i in range(30)]
    table = clap_table(list(audio), list(text), [float(i) / 30 for i in range(30)], status)
    cfg = MetricsConfig(recall_max_images=12)
    counts = reconcile(table, 30)
    one = MetricsAccumulator(cfg).add(table).finish(counts)
    order = np.random.default_rng(0).permutation(30)
    blocks = [MetricsAccumulator(cfg).add(table.take(pa.array(order[i:i + 7]))) for i in range(0, 30, 7)]
    merged = blocks[-1]
    for b in blocks[-2::-1]:
        merged = merged.merge(b)
    many = merged.finish(counts)
    assert one.to_json() == many.to_json()
    r = one.values["audio_text"]["retrieval"]
    assert r["sample"] == {"size": 12, "seed": 0, "candidates": 22, "max": 12} and r["clips"] == 12


def test_without_clap_columns_it_is_skipped_and_clap_score_is_never_image_text() -> None:
    plain = pa.Table.from_pylist([{"id": "a", "kind": "text", "content": "x", "status": "ok", "source": "t",
                                   "license": "CC0-1.0"}], schema=ROW_SCHEMA)
    m = metrics(plain)
    assert "audio_text" not in m.values and "clap_score stage" in m.skipped["audio_text"]
    audio, text = pairs(4)
    m = metrics(clap_table(list(audio), list(text), [0.5] * 4))
    assert "audio_text" in m.values
    assert "similarity" not in m.values and "similarity" in m.skipped  # no image-text column
    one = metrics(clap_table([audio[0], None], [text[0], None], [0.5, None]))
    assert "retrieval" not in one.values["audio_text"] and "fewer than 2" in one.skipped["audio_text_retrieval"]


def test_report_has_the_section_or_says_why_not() -> None:
    audio, text = pairs(12, noise=0.3)
    table = clap_table(list(audio), list(text), [0.1 * i for i in range(12)], ["ok"] * 9 + ["rejected"] * 3)
    counts = reconcile(table, 12)
    page = render_report(dataset="ds", version="v1", counts=counts, table=table, metrics=metrics(table))
    section = page[page.index("<h2 id='audio-text'>Audio-text (CLAP)</h2>"):]
    section = section[:section.index("<h2", 5)]
    assert "CLAP score, kept vs rejected" in section and "data:image/png;base64," in section
    assert "<th>R@1</th>" in section and "audio-&gt;text" in section and "text-&gt;audio" in section
    assert "9 kept and 3 rejected input records" in section
    plain = table.select(list(ROW_SCHEMA.names))
    page = render_report(dataset="ds", version="v1", counts=counts, table=plain, metrics=metrics(plain))
    assert "Audio-text (CLAP)</h2><p class='note'>Not measured: no clap_score" in page


def test_a_streamed_release_carries_audio_text_in_its_manifest(tmp_path: Path) -> None:
    from pipeline.run.local_runner import read_inputs, run_stages
    from stages.placeholder_lint import PlaceholderLint
    from tests.pipeline.test_release_stream import manifest, release

    uri = manifest(tmp_path)
    table = run_stages(read_inputs([uri], 1 << 20), [PlaceholderLint()]).table
    n = table.num_rows
    audio, text = pairs(n, noise=0.6, seed=5)
    clap = clap_table(list(audio), list(text), [float(x) for x in np.linspace(-0.2, 0.9, n)])
    for name in ("clap_score", "clap_audio_emb", "clap_text_emb", "clap_model"):
        table = table.append_column(name, clap[name])
    one = release(tmp_path, table, uri, "one", block_rows=1 << 20)["manifest"]["metrics"]
    many = release(tmp_path, table, uri, "many", block_rows=7)["manifest"]["metrics"]
    assert one == many
    a = one["audio_text"]
    assert a["rows"] == {"kept": n - 16, "rejected": 16}  # 2 ingest and 14 placeholder_lint rejects
    assert a["retrieval"]["sample"]["candidates"] == n - 16
    assert 0 < a["retrieval"]["audio_to_text"]["r@1"] < 1 and a["retrieval"]["sample"]["seed"] == 0
