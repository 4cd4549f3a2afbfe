"""The report page: every metric section with its plot, inline PNGs only, links that stay inside
the page or the release, and (when Chromium is installed) every image decoding in a real
headless browser that has no network."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pyarrow as pa
import pytest

from pipeline.metrics.release import compute_release_metrics
from pipeline.release.gates import evaluate_gates
from pipeline.release.report import render_report
from pipeline.release.writer import reconcile, reject_shard_map
from pipeline.run.config import GatesConfig
from schemas.records import ROW_SCHEMA
from stages.scoring import EMB_TYPE

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def full_table() -> pa.Table:
    """Object rows with float16 embeddings (one rejected for a low score), segment rows with a
    continuity score and CLAP embeddings, negatives with a difficulty and one false negative, and
    other rejects."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    specs = []
    for i in range(30):
        img = centres[i] + rng.normal(scale=0.8, size=16)
        txt = centres[i] + rng.normal(scale=0.8, size=16)
        low = i == 29
        specs.append({
            "id": f"obj-{i:02d}", "kind": "object", "content": "A red circle on the left of a blue square.",
            "captions": ["The circle is blue."] if i == 3 else ["A red circle and a blue square."],
            "boxes": [{"label": "red circle", "bbox": [0, 0, 1, 1], "format": "pascal_voc"},
                      {"label": "blue square", "bbox": [2, 0, 3, 1], "format": "pascal_voc"}],
            "status": "rejected" if low else "ok", "reject_stage": "clip_score" if low else None,
            "reject_code": "ERR_CROSS_MDL_LOW_SCORE" if low else None,
            "reject_detail": "similarity 0.05 below 0.2" if low else None,
            "image_embedding": img.astype(np.float16).tolist(), "text_embedding": txt.astype(np.float16).tolist(),
        })
    for i in range(8):
        clip = centres[i] + rng.normal(scale=0.5, size=(2, 16))
        specs.append({"id": f"seg-{i}", "kind": "segment", "content": "s", "continuity_tau": 1.0 - 0.1 * i,
                      "status": "ok", "clap_score": 0.1 * i, "clap_audio_emb": clip[:1].astype(np.float16).tolist(),
                      "clap_text_emb": clip[1:].astype(np.float16).tolist()})
        specs.append({"id": f"seg-{i}-neg", "kind": "segment", "content": "s", "parent_id": f"seg-{i}",
                      "negative_type": "temporal_shift", "negative_similarity": 0.1 * i,
                      "status": "rejected" if i == 7 else "ok",
                      "reject_stage": "negatives" if i == 7 else None,
                      "reject_code": "ERR_CROSS_MDL_HARD_NEG" if i == 7 else None})
    specs.append({"id": "bad-media", "kind": "object", "content": "x", "status": "rejected",
                  "reject_stage": "media_check", "reject_code": "ERR_CROSS_MDL_MEDIA",
                  "reject_detail": "image missing: media/x.png", "source_ref": "m.jsonl:7"})
    base = pa.Table.from_pylist(
        [{k: v for k, v in s.items() if k in ROW_SCHEMA.names} | {"source": "t", "license": "CC0-1.0"}
         for s in specs], schema=ROW_SCHEMA)
    extra = {"image_embedding": pa.list_(pa.float16()), "text_embedding": pa.list_(pa.float16()),
             "continuity_tau": pa.float64(), "negative_type": pa.string(), "negative_similarity": pa.float64(),
             "clap_score": pa.float32(), "clap_audio_emb": EMB_TYPE, "clap_text_emb": EMB_TYPE}
    for name, typ in extra.items():
        base = base.append_column(name, pa.array([s.get(name) for s in specs], typ))
    return base


@pytest.fixture(scope="module")
def report() -> tuple[str, dict]:
    """One page for the module's tests (its plots take seconds to draw)."""
    table = full_table()
    counts = reconcile(table, 39)
    metrics = compute_release_metrics(table, counts, [("media_check", 47, 0.5), ("clip_score", 47, 2.0)])
    gates = evaluate_gates(GatesConfig(r_at_1_min=0.99, chair_s_max=0.5), {**metrics.values, "counts": counts},
                           metrics.skipped)
    page = render_report(dataset="ds", version="v1", counts=counts, table=table, metrics=metrics, gates=gates,
                         stage_timings=[("media_check", 47, 0.5), ("clip_score", 47, 2.0)],
                         reject_shards=reject_shard_map(table, 100_000_000))
    return page, metrics.values


def test_every_metric_has_its_section_and_plot(report: tuple[str, dict]) -> None:
    page, values = report
    for key in ("retrieval", "similarity", "audio_text", "continuity", "hallucination", "entailment", "negatives"):
        assert key in values
    for heading in ("Quality gates", "Rejects by code", "Cross-modal retrieval", "Image-text similarity, kept vs "
                    "rejected", "Audio-text (CLAP)", "Hallucination (CHAIR)", "Caption conflicts (entailment)",
                    "Temporal continuity (segments)", "Negative pairs", "Per-stage throughput",
                    "Example rejected rows"):
        assert f">{heading}</h2>" in page
    alts = re.findall(r"<img alt='([^']+)'", page)
    # rejected input records and dropped derived rows (negative candidates) are charted apart
    assert alts == ["rejected input records by reason code", "dropped derived rows by reason code",
                    "similarity matrix", "similarity", "CLAP score, kept vs rejected", "Temporal continuity (segments)",
                    "negative difficulty", "throughput"]
    assert "Not measured" not in page
    assert "class='fail'>FAIL</span>" in page  # r_at_1_min 0.99 cannot pass
    assert "red circle vs blue circle" in page  # obj-03's captions disagree on the colour


def test_page_is_self_contained_and_its_images_are_png(report: tuple[str, dict]) -> None:
    page, _ = report
    sources = re.findall(r"src='([^']+)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    for src in sources:
        png = base64.b64decode(src.split(",", 1)[1])
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert not re.search(r"(?:src|href)=['\"]?(?:https?:)?//", page)  # nothing from a network
    assert "<script" not in page and "<link" not in page


def test_rejected_rows_are_linked_to_their_example_and_file(report: tuple[str, dict]) -> None:
    page, _ = report
    assert "<a href='#reject-bad-media'>examples</a>" in page
    assert "<a id='reject-bad-media'></a>" in page
    assert "href='../rejects/media_check/ERR_CROSS_MDL_MEDIA/part-00000.parquet'" in page
    assert "image missing: media/x.png" in page and "m.jsonl:7" in page


def test_absent_inputs_say_why() -> None:
    table = full_table().select([n for n in ROW_SCHEMA.names])
    counts = reconcile(table, 39)
    metrics = compute_release_metrics(table, counts, [])
    page = render_report(dataset="ds", version="v1", counts=counts, table=table, metrics=metrics)
    assert "Not measured: no image and text embedding columns" in page
    assert "Not measured: no continuity_tau column (run the segment_align stage)" in page
    assert "No gate is configured." in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium not installed (Debian: apt-get update && apt-get install -y chromium)")
def test_report_opens_offline_in_headless_chromium(report: tuple[str, dict], tmp_path: Path) -> None:
    page, _ = report
    # The test, not the report, carries the script: it records each image's decoded width.
    probe = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-widths',"
             "Array.from(document.images).map(i=>i.complete?i.naturalWidth:0).join(','))})</script>")
    (tmp_path / "index.html").write_text(page.replace("</body>", probe + "</body>"))
    cmd = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "index.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    widths = re.search(r'data-widths="([^"]*)"', dom)
    assert widths, "the load event did not run"
    decoded = [int(w) for w in widths.group(1).split(",")]
    assert len(decoded) == 8 and all(w > 100 for w in decoded)
