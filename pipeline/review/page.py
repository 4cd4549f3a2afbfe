"""``DIR/index.html``: the review page of a sample, opened offline from disk or served by
``xmodal review serve DIR``; ``DIR/sample.json`` lists what was sampled and why, and
``DIR/media/`` holds the media the page shows (nothing is fetched from a network)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.review.cards import card_html
from pipeline.review.figures import e
from pipeline.review.media import DEFAULT_MAX_MEDIA_BYTES, MEDIA_DIR, MediaCopier
from pipeline.review.release_rows import Release
from pipeline.review.sample import Sample
from pipeline.review.script import SCRIPT
from pipeline.review.verdicts import VERDICT_FORMAT

SAMPLE_FORMAT = "xmodal-review-sample/1"
SAMPLE_FILE = "sample.json"
PAGE_FILE = "index.html"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
#bar{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #ccc;padding:.5rem 1rem;
display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
main{max-width:80rem;margin:0 auto;padding:1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;
vertical-align:top;font-size:90%}th{background:#f3f3f3}
section.sample{background:#fff;border:1px solid #ccc;border-left:6px solid #ccc;margin:1rem 0;padding:.6rem 1rem}
section.sample.current{box-shadow:0 0 0 3px #4363d855}section.sample.agreed{border-left-color:#1a7f37}
section.sample.disagreed{border-left-color:#b42318}section.sample header{display:flex;gap:.6rem;flex-wrap:wrap}
.where{color:#666;font-size:85%;margin-left:auto;overflow-wrap:anywhere}.stratum{background:#eef;border-radius:3px;
padding:0 .3rem;font-size:85%}.kept{color:#1a7f37;font-weight:600}.rejected{color:#b42318;font-weight:600}
.detail{background:#fff4f2;padding:.3rem .5rem;overflow-wrap:anywhere}
.media-row,.pair{display:flex;gap:1.5rem;flex-wrap:wrap;align-items:flex-start}.side{flex:1;min-width:18rem}
figure{margin:.3rem 0}.frame{position:relative}.frame img,.frame svg{position:absolute;left:0;top:0}
.frame img{image-rendering:pixelated}figcaption{font-size:85%;color:#555}
mark.boxword{color:inherit;padding:0 .1rem}.chip{background:#eee;border-radius:3px;font-size:80%;padding:0 .2rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
.good{color:#1a7f37}.bad{color:#b42318}.lr{color:#7a4b00}.note{color:#666;font-style:italic}
.controls{display:flex;gap:.5rem;align-items:center;margin-top:.5rem}.controls .verdict-note{flex:1}
.controls button{padding:.3rem .8rem}.agree{background:#e6f4ea}.disagree{background:#fdecea}
.doc{border-left:3px solid #ddd;padding-left:.8rem}pre{white-space:pre-wrap;font-size:80%}
"""


@dataclass(frozen=True)
class ReviewPage:
    out_dir: Path
    rows: int
    missing_media: int


def _strata_table(sample: Sample) -> str:
    counts: dict[str, int] = {}
    for r in sample.rows:
        for s in r.strata:
            counts[s] = counts.get(s, 0) + 1
    rows = "".join(f"<tr><td>{e(name)}</td><td>{n}</td><td>{counts.get(name, 0)}</td></tr>"
                   for name, n in sample.population.items())
    return ("<details open><summary>What was sampled</summary><table><tr><th>stratum</th><th>rows in the release"
            f"</th><th>sampled</th></tr>{rows}</table></details>")


def sample_json(release: Release, sample: Sample) -> dict[str, Any]:
    return {"format": SAMPLE_FORMAT, "release": release.uri, "dataset": release.dataset,
            "version": release.version, "config_hash": release.manifest.get("config_hash"),
            "seed": sample.seed, "per_code": sample.per_code, "kept": sample.kept,
            "population": sample.population, "rows": [r.to_json() for r in sample.rows]}


def _prepare(out_dir: Path) -> None:
    """An empty directory, or one that holds an earlier review page (replaced, verdicts kept)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / SAMPLE_FILE).is_file():
            raise UserError(f"{out_dir} is not empty and holds no earlier review ({SAMPLE_FILE}); choose another --out")
        shutil.rmtree(out_dir / MEDIA_DIR, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def write_review_page(release: Release, sample: Sample, out_dir: Path,
                      max_media_bytes: int = DEFAULT_MAX_MEDIA_BYTES) -> ReviewPage:
    """Write the page, its media and ``sample.json`` under ``out_dir``."""
    _prepare(out_dir)
    media = MediaCopier(out_dir, max_media_bytes, release_uri=release.uri)
    cards = [card_html(i, row, media) for i, row in enumerate(sample.rows)]
    meta = {"dataset": release.dataset, "version": release.version, "seed": sample.seed,
            "verdict_format": VERDICT_FORMAT, "release": release.uri}
    title = f"Review: {release.dataset} {release.version}"
    bar = (f"<div id='bar'><b>{e(title)}</b><span>seed {sample.seed}, {len(cards)} samples</span>"
           "<label>reviewer <input id='reviewer' autocomplete='name' placeholder='your name'></label>"
           "<span id='progress'></span><button id='download'>download verdicts (JSONL)</button>"
           "<span id='status' class='note'></span><span class='note'>keys: <kbd>a</kbd> agree, <kbd>d</kbd> "
           "disagree, <kbd>n</kbd> note, <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>Esc</kbd> leave a field</span>"
           "</div>")
    intro = (f"<p>Release <code>{e(release.uri)}</code>. Agree when the release's decision about the row is right "
             "(a kept row is good, a rejected row deserved its code); disagree otherwise, and for a kept row name "
             "the code it should have had. Verdicts stay in this browser until downloaded or posted to "
             "<code>xmodal review serve</code>.</p>")
    payload = json.dumps(meta, ensure_ascii=False).replace("</", "<\\/")
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>{bar}<main>{intro}"
            f"{_strata_table(sample)}{''.join(cards)}</main>"
            f"<script type='application/json' id='review-meta'>{payload}</script>"
            f"<script>{SCRIPT}</script></body></html>")
    (out_dir / PAGE_FILE).write_text(page, encoding="utf-8")
    (out_dir / SAMPLE_FILE).write_text(json.dumps(sample_json(release, sample), indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return ReviewPage(out_dir, len(cards), len(media.missing))
