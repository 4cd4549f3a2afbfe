"""The report's "Audio-text (CLAP)" section: ``clap_score`` of kept vs rejected input records
(histogram and quantiles) and the audio-text R@k table, from ``metrics.audio_text``
(``pipeline.metrics.audio_text``), or the reason it was not measured. ``report.py`` imports it;
both build with ``pipeline.release.report_html``.
"""

from __future__ import annotations

from typing import Any

from pipeline.metrics.release import ReleaseMetrics
from pipeline.release import plots
from pipeline.release.report_html import e as _e
from pipeline.release.report_html import fmt as _fmt
from pipeline.release.report_html import img as _img
from pipeline.release.report_html import skip as _skip
from pipeline.release.report_html import table as _table


def audio_text_section(metrics: ReleaseMetrics | None) -> str:
    out = "<h2 id='audio-text'>Audio-text (CLAP)</h2>"
    a: dict[str, Any] | None = metrics.values.get("audio_text") if metrics else None
    if not a or metrics is None:
        return out + _skip(metrics, "audio_text")
    models = ", ".join(a.get("models") or []) or "-"
    out += f"<p>Score <code>{_e(a['source'])}</code>; model(s) <code>{_e(models)}</code>.</p>"
    p = metrics.plots
    if "kept" in a:
        rows = a["rows"]
        out += (f"<p>{rows['kept']} kept and {rows['rejected']} rejected input records have a CLAP "
                f"score; the distributions are of {a['sampled_rows']} of them (a seeded sample).</p>")
        series = {"kept": p.clap_kept, "rejected": p.clap_rejected}
        present = {k: v for k, v in series.items() if v is not None}
        out += _img(plots.histogram_png(present, "CLAP score, kept vs rejected", "audio-text cosine"),
                    "CLAP score, kept vs rejected")
        out += _table(["rows", "n", "mean", "p05", "median", "p95"],
                      [[name, d["count"], *[_fmt(d.get(q)) for q in ("mean", "p05", "median", "p95")]]
                       for name, d in (("kept", a["kept"]), ("rejected", a["rejected"]))])
        if a["rejected_by_stage_code"]:
            out += ("<p>Scored rows rejected, by stage/code: "
                    + _e(", ".join(f"{k}: {v}" for k, v in a["rejected_by_stage_code"].items())) + "</p>")
    else:
        out += _skip(metrics, "audio_text_scores")
    r = a.get("retrieval")
    if not r:
        return out + _skip(metrics, "audio_text_retrieval")
    ks = list(r["audio_to_text"])
    s = r["sample"]
    out += (f"<h3>Audio-text retrieval</h3><p>{r['clips']} clips and {r['texts']} distinct texts from "
            f"{s['size']} of {s['candidates']} kept records (seeded sample, seed {s['seed']}, at most "
            f"{s['max']}); embeddings <code>{_e(r['columns']['audio'])}</code> x "
            f"<code>{_e(r['columns']['text'])}</code>. text->audio counts a text as found at its "
            f"best-ranked clip.</p><p class='note'>{_e(r['pairs'])}.</p>")
    rows_r = [["audio->text", *[_fmt(r["audio_to_text"][k]) for k in ks]],
              ["text->audio", *[_fmt(r["text_to_audio"][k]) for k in ks]]]
    return out + _table(["direction", *[k.upper() for k in ks]], rows_r)
