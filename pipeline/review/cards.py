"""One card per sampled row: what the release decided, the row as a reviewer needs to see it
(by kind: object, negative pair, segment, document, text), and the verdict controls."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.release.thumbnails import box_colour, first_image_ref
from pipeline.review.figures import (
    boxed_figure,
    claims_html,
    content_html,
    display_scale,
    e,
    image_size,
    mentions_html,
    spatial_claims,
)
from pipeline.review.media import MediaCopier, chapter_cues, subtitle_cues, vtt_data_uri, webvtt
from pipeline.review.sample import SampledRow
from schemas.reason_codes import ReasonCode
from stages.object_boxes import row_boxes_xyxy


def _fmt(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _labels(record: dict[str, Any]) -> list[str]:
    return [(b or {}).get("label") or "" for b in record.get("boxes") or []]


def _boxes(record: dict[str, Any]) -> list[list[float]] | None:
    try:
        return row_boxes_xyxy(record)
    except (TypeError, ValueError, KeyError):
        return None


def _object_figure(record: dict[str, Any], media: MediaCopier, caption: str, uri: str | None = None) -> str:
    ref = first_image_ref(record)
    if ref is None:
        return "<p class='note'>No image ref.</p>"
    if uri is not None:
        ref = {**ref, "uri": uri}
    copied = media.copy(ref, record.get("manifest_root"))
    boxes = _boxes(record) if uri is None else None
    return boxed_figure(copied, image_size(ref, copied), boxes, _labels(record), caption)


def _boxes_table(record: dict[str, Any]) -> str:
    boxes, xyxy = record.get("boxes") or [], _boxes(record) or []
    rows = []
    for i, b in enumerate(boxes):
        px = ", ".join(f"{v:.1f}" for v in xyxy[i]) if i < len(xyxy) and xyxy[i] else "-"
        rows.append(f"<tr><td><span class='swatch' style='background:{box_colour(i)}'></span>{i}</td>"
                    f"<td>{e(b.get('label'))}</td><td>{e(b.get('format'))}</td>"
                    f"<td>{e(b.get('bbox'))}</td><td>{px}</td></tr>")
    if not rows:
        return "<p class='note'>No boxes.</p>"
    return ("<table class='boxes'><tr><th>box</th><th>label</th><th>format</th><th>as given</th>"
            f"<th>pixels x1, y1, x2, y2</th></tr>{''.join(rows)}</table>")


def _transforms(record: dict[str, Any]) -> str:
    raw = record.get("augment_transforms")
    if raw is None:
        return ""
    try:
        steps = json.loads(raw)
    except ValueError:
        return f"<p>transforms: <code>{e(raw)}</code></p>"
    names = [str(s.get("name")) for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
    flip = any("Flip" in n for n in names)
    return (f"<p>transforms: <b>{e(', '.join(names) or 'none')}</b>"
            f"{' <span class=lr>(left/right exchanged: the text must have been rewritten)</span>' if flip else ''}"
            f"</p><details><summary>parameters</summary><pre>{e(raw)}</pre></details>")


def object_body(row: SampledRow, media: MediaCopier) -> str:
    r = row.record
    labels = _labels(r)
    figures = []
    if row.parent is not None:
        figures.append(_object_figure(row.parent, media, f"parent {row.parent.get('id')}"))
    figures.append(_object_figure(r, media, str(r.get("id"))))
    captions = "".join(f"<li>{mentions_html(c, labels)}</li>" for c in r.get("captions") or [])
    lat = ""
    if r.get("laterality"):
        ref = first_image_ref(r) or {}
        lat = (f"<p class='lr'>Laterality sample: left/right is part of the label; image orientation "
               f"<b>{e(ref.get('orientation') or 'not given')}</b>.</p>")
    parent_text = ""
    if row.parent is not None:
        parent_text = (f"<p>parent content: {content_html(row.parent.get('content'), _labels(row.parent))}</p>")
    scores = [f"{k} {_fmt(r.get(k))}" for k in ("clip_score", "chair_i", "chair_s") if r.get(k) is not None]
    return (f"<div class='media-row'>{''.join(figures)}</div>"
            f"<p class='content'>{content_html(r.get('content'), labels)}</p>{parent_text}"
            + (f"<ol class='captions'>{captions}</ol>" if captions else "")
            + lat + _transforms(r) + _boxes_table(r)
            + "<h4>Spatial relations the check read</h4>"
            + claims_html(spatial_claims(r, _boxes(r), image_size(first_image_ref(r), _probe(r, media))), labels)
            + (f"<p class='note'>{e(', '.join(scores))}</p>" if scores else ""))


def _probe(record: dict[str, Any], media: MediaCopier) -> Any:
    return media.copy(first_image_ref(record), record.get("manifest_root"))


def negative_body(row: SampledRow, media: MediaCopier) -> str:
    r = row.record
    if r.get("kind") == "segment":
        return segment_body(row, media) + _pair_facts(r)
    pos = _object_figure(r, media, "positive image")
    neg = (_object_figure(r, media, "negative image", uri=str(r["negative_media"])) if r.get("negative_media")
           else "<p class='note'>Same image; the text is the negative.</p>")
    return ("<div class='pair'>"
            f"<div class='side positive'><h4>positive</h4>{pos}<p>{e(r.get('positive_text'))}</p>"
            f"<p>score {_fmt(r.get('positive_similarity'))}</p></div>"
            f"<div class='side negative'><h4>negative ({e(r.get('negative_type'))})</h4>{neg}"
            f"<p>{e(r.get('negative_text'))}</p><p>score {_fmt(r.get('negative_similarity'))}</p></div>"
            "</div>" + _pair_facts(r))


def _pair_facts(r: dict[str, Any]) -> str:
    s_pos, s_neg = r.get("positive_similarity"), r.get("negative_similarity")
    margin = f"; s_pos - s_neg = {s_pos - s_neg:.4f}" if s_pos is not None and s_neg is not None else ""
    shift = (f"; subtitles shifted by {r['negative_shift_us'] / 1e6:.2f} s"
             if r.get("negative_shift_us") is not None else "")
    return (f"<p>edit: <b>{e(r.get('negative_edit') or '-')}</b>; filter verdict: "
            f"<b>{e(r.get('negative_verdict') or '-')}</b>{margin}{shift}; anchor {e(r.get('parent_id'))}</p>")


def segment_body(row: SampledRow, media: MediaCopier) -> str:
    r = row.record
    refs = r.get("media") or []
    video = next((m for m in refs if m and m.get("modality") == "video"), None)
    audio = next((m for m in refs if m and m.get("modality") == "audio"), None)
    fps = float(video["fps"]) if video and video.get("fps") else None
    subs, chapters = webvtt(subtitle_cues(r)), webvtt(chapter_cues(r, fps))
    name = hashlib.sha256(row.key.encode()).hexdigest()[:16]
    files = (f"<a href='{e(media.write_text(f'{name}.subtitles.vtt', subs))}'>subtitles.vtt</a> "
             f"<a href='{e(media.write_text(f'{name}.chapters.vtt', chapters))}'>chapters.vtt</a>")
    parts = []
    if video is not None:
        v = media.copy(video, r.get("manifest_root"))
        if v.rel is None:
            parts.append(f"<p class='note'>video {e(v.uri)}: {e(v.missing)}</p>")
        else:
            w, h = int(video.get("width") or 320), int(video.get("height") or 240)
            s = display_scale(w, h)
            parts.append(
                f"<video class='segment' controls preload='auto' width='{round(w * s)}' height='{round(h * s)}' "
                f"src='{e(v.rel)}'><track kind='subtitles' srclang='en' label='subtitles' default "
                f"src='{vtt_data_uri(subs)}'><track kind='chapters' srclang='en' label='aligned sub-segments' default "
                f"src='{vtt_data_uri(chapters)}'></video>")
    if audio is not None:
        a = media.copy(audio, r.get("manifest_root"))
        parts.append(f"<audio class='segment-audio' controls preload='auto' src='{e(a.rel)}'></audio>"
                     if a.rel else f"<p class='note'>audio {e(a.uri)}: {e(a.missing)}</p>")
    offset = r.get("av_offset_us")
    facts = (f"<p>A/V offset <b>{'-' if offset is None else f'{offset / 1000:+.0f} ms'}</b> (correlation "
             f"{_fmt(r.get('av_offset_score'))}); continuity (Kendall tau) <b>{_fmt(r.get('continuity_tau'))}</b>; "
             f"alignment {e(r.get('dtw_method') or '-')}; {files}</p>")
    chapter_items = "".join(
        f"<li><button class='seek' data-seek='{start / 1e6:.3f}'>{start / 1e6:.2f} s</button> "
        f"{e(text)} <span class='note'>(video {start / 1e6:.2f}-{end / 1e6:.2f} s)</span></li>"
        for start, end, text in chapter_cues(r, fps))
    sub_rows = "".join(f"<tr><td>{s / 1e6:.2f}</td><td>{t / 1e6:.2f}</td><td>{e(x)}</td></tr>"
                       for s, t, x in subtitle_cues(r))
    return (f"<div class='player'>{''.join(parts)}</div><p class='content'>{content_html(r.get('content'), [])}</p>"
            + facts
            + (f"<h4>Aligned sub-segments</h4><ol class='chapters'>{chapter_items}</ol>" if chapter_items else "")
            + (f"<table class='subs'><tr><th>start s</th><th>end s</th><th>subtitle</th></tr>{sub_rows}</table>"
               if sub_rows else "<p class='note'>No subtitles.</p>"))


def document_body(row: SampledRow, media: MediaCopier) -> str:
    """The interleaved content with each image span replaced by its figure, in order; then the
    layout items in reading order."""
    r = row.record
    images = [m for m in r.get("media") or [] if m and m.get("modality") == "image"]
    figures = [_object_figure({"media": [m], "manifest_root": r.get("manifest_root")}, media, f"figure {i + 1}")
               for i, m in enumerate(images)]
    content = r.get("content") or ""
    blocks: list[str] = []
    k = 0
    for para in content.split("\n\n") if content else []:
        if "<|image_start|>" in para and k < len(figures):
            blocks.append(f"<div class='docfig' data-order='{len(blocks)}'>{figures[k]}</div>")
            k += 1
        else:
            blocks.append(f"<p class='docblock' data-order='{len(blocks)}'>{content_html(para, [])}</p>")
    items = "".join(
        f"<tr><td>{i}</td><td>{e(it.get('page'))}</td><td>{e(it.get('type'))}</td>"
        f"<td>{e(it.get('text') if it.get('type') == 'text' else 'media ' + str(it.get('media_index')))}</td>"
        f"<td>{e(it.get('bbox'))}</td></tr>" for i, it in enumerate(r.get("items") or []) if it)
    unplaced = "".join(figures[k:])
    return (f"<div class='doc'>{''.join(blocks) or '<p class=note>(no interleaved content)</p>'}</div>"
            + (f"<p class='note'>Figures the content does not place:</p>{unplaced}" if unplaced else "")
            + (f"<details><summary>layout items (page order)</summary><table><tr><th>#</th><th>page</th>"
               f"<th>type</th><th>text</th><th>bbox</th></tr>{items}</table></details>" if items else ""))


def body_html(row: SampledRow, media: MediaCopier) -> str:
    r = row.record
    if row.shard.group == "negatives" or r.get("negative_type"):
        return negative_body(row, media)
    kind = r.get("kind")
    if kind == "object":
        return object_body(row, media)
    if kind == "segment":
        return segment_body(row, media)
    if kind == "document":
        return document_body(row, media)
    return f"<p class='content'>{content_html(r.get('content'), [])}</p>"


def verdict_controls(row: SampledRow) -> str:
    codes = "".join(f"<option value='{c.value}'>{c.value}</option>" for c in ReasonCode)
    miss = (f"<select class='code' title='the code it should have been rejected with'>"
            f"<option value=''>should be rejected as…</option>{codes}</select>" if row.check == "kept" else "")
    return ("<div class='controls'><button class='agree' data-verdict='agree'>agree <kbd>a</kbd></button>"
            "<button class='disagree' data-verdict='disagree'>disagree <kbd>d</kbd></button>"
            f"{miss}<input class='verdict-note' placeholder='note (n)' maxlength='2000'>"
            "<span class='state'></span></div>")


def card_html(n: int, row: SampledRow, media: MediaCopier) -> str:
    r = row.record
    decided = ("<span class='kept'>KEPT</span>" if row.check == "kept" else
               f"<span class='rejected'>REJECTED {e(row.check)}</span> by {e(row.shard.stage)}")
    detail = f"<p class='detail'>{e(r.get('reject_detail'))}</p>" if r.get("reject_detail") else ""
    strata = "".join(f"<span class='stratum'>{e(s)}</span>" for s in row.strata)
    return (f"<section class='sample' id='s{n}' tabindex='-1' data-key='{e(row.key)}' data-id='{e(r.get('id'))}' "
            f"data-kind='{e(r.get('kind'))}' data-check='{e(row.check)}' data-stratum='{e(row.strata[0])}'>"
            f"<header><b>#{n + 1}</b> <code>{e(r.get('id'))}</code> {e(r.get('kind'))} {strata} {decided}"
            f"<span class='where'>{e(row.key)} · {e(r.get('source_ref'))}</span></header>{detail}"
            f"<div class='body'>{body_html(row, media)}</div>{verdict_controls(row)}</section>")
