"""The review page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver`` through
selenium; skipped with the reason when they are missing): every sampled row is on it, a drawn
box's pixels sit at the box's coordinates, the video plays with its subtitle and chapter tracks,
and clicking through verdicts gives a verdicts file whose merge has the expected figures; served
by ``xmodal review serve``, the page posts each verdict."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.review.merge import merge_verdicts
from pipeline.review.release_rows import Release
from pipeline.review.sample import Sample
from pipeline.review.serve import make_server
from pipeline.review.verdicts import read_verdicts
from tests.review.browser import chromium, missing_browser, screenshot_page

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("profile"), downloads=downloads) as d:
        yield d


def wait_for(driver: Any, script: str, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 60).until(lambda d: d.execute_script(script), message=what)


def open_fresh(driver: Any, url: str) -> None:
    driver.get(url)
    driver.execute_script("localStorage.clear()")
    driver.get(url)
    wait_for(driver, "return !!window.xmodalReview", "the page's script did not start")


def test_every_sampled_row_is_on_the_page(driver: Any, review_page: Path) -> None:
    open_fresh(driver, (review_page / "index.html").as_uri())
    sample = json.loads((review_page / "sample.json").read_text())
    keys = driver.execute_script(
        "return Array.from(document.querySelectorAll('section.sample')).map(s => s.dataset.key)")
    assert keys == [r["key"] for r in sample["rows"]]
    wait_for(driver, "return Array.from(document.images).every(i => i.complete)", "images did not load")
    broken = driver.execute_script("return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
    assert broken == []


def test_a_drawn_box_sits_where_its_coordinates_put_it(driver: Any, review_page: Path) -> None:
    open_fresh(driver, (review_page / "index.html").as_uri())
    frames = driver.find_elements("css selector", "section.sample[data-check='kept'][data-kind='object'] .frame")
    frame = next(f for f in frames if f.find_elements("css selector", "g.box"))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", frame)
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.top]", frame)
    shot = cv2.imdecode(np.frombuffer(driver.get_screenshot_as_png(), np.uint8), cv2.IMREAD_COLOR)
    scale = float(frame.get_attribute("data-scale"))
    for box in frame.find_elements("css selector", "g.box"):
        x1, y1, x2, y2 = (float(v) for v in box.get_attribute("data-xyxy").split(","))
        colour = box.get_attribute("data-colour")
        bgr = np.array([int(colour[i:i + 2], 16) for i in (5, 3, 1)])
        # the screen row through the box's middle: the box colour is exactly at its left and right edges
        y = round(rect[1] + (y1 + y2) / 2 * scale)
        row = shot[y, round(rect[0]): round(rect[0] + frame.size["width"])].astype(int)
        hits = np.flatnonzero(np.abs(row - bgr).max(axis=1) <= 12)
        assert len(hits), f"no pixel of {colour} on the box's middle row"
        assert abs(hits.min() - x1 * scale) <= 2 and abs(hits.max() - x2 * scale) <= 2, (hits, x1 * scale, x2 * scale)
        inside = hits[(hits > x1 * scale + 3) & (hits < x2 * scale - 3)]
        assert len(inside) == 0, "the box colour inside the box: the box is not where it was drawn"
        column = shot[round(rect[1]): round(rect[1] + frame.size["height"]), round(rect[0] + (x1 + x2) / 2 * scale)]
        bottom = np.flatnonzero(np.abs(column.astype(int) - bgr).max(axis=1) <= 12)
        assert abs(bottom.max() - y2 * scale) <= 2


def test_the_video_has_its_subtitle_and_chapter_tracks(driver: Any, review_page: Path, review_sample: Sample) -> None:
    open_fresh(driver, (review_page / "index.html").as_uri())
    row = next(r for r in review_sample.rows if r.check == "kept" and r.record["kind"] == "segment"
               and r.record.get("alignment"))
    card = driver.find_element("css selector", f"section.sample[data-key='{row.key}']")
    driver.execute_script("arguments[0].scrollIntoView()", card)
    video = card.find_element("css selector", "video.segment")
    state = wait_for(driver, f"""
        const v = document.querySelector("section.sample[data-key='{row.key}'] video.segment");
        const tracks = Array.from(v.textTracks);
        if (v.readyState < 1 || !tracks.every(t => t.cues && t.cues.length)) return null;
        return {{duration: v.duration, error: v.error && v.error.code,
                 tracks: tracks.map(t => [t.kind, t.cues.length, t.cues[0].text, t.cues[0].startTime])}};""",
                     "the video or its tracks did not load")
    assert state["error"] is None
    assert state["duration"] == pytest.approx(row.record["duration_us"] / 1e6, abs=0.3)
    subs, chapters = state["tracks"]
    first = row.record["subtitles"][0]
    assert subs == ["subtitles", len(row.record["subtitles"]), first["text"], pytest.approx(first["start_us"] / 1e6)]
    assert chapters[:3] == ["chapters", len(row.record["alignment"]), row.record["alignment"][0]["text"]]
    seek = card.find_elements("css selector", "button.seek")[1]
    seek.click()
    assert float(video.get_property("currentTime")) == pytest.approx(float(seek.get_attribute("data-seek")), abs=0.05)
    audio = card.find_element("css selector", "audio.segment-audio")
    assert float(audio.get_property("currentTime")) == pytest.approx(float(seek.get_attribute("data-seek")), abs=0.05)


def click_through(driver: Any, url: str) -> dict[str, str]:
    """Judge every card: disagree with the first reject and with the first kept object (naming
    OBJ_FLIP), agree with the rest, the last card by keyboard; returns key -> verdict."""
    open_fresh(driver, url)
    cards = driver.find_elements("css selector", "section.sample")
    cards[0].find_element("css selector", "button.agree").click()
    assert driver.find_element("id", "status").text == "enter your name first"
    assert driver.execute_script("return Object.keys(window.xmodalReview.state()).length") == 0
    driver.find_element("id", "reviewer").send_keys("ana")
    said: dict[str, str] = {}
    first_reject = next(c for c in cards if c.get_attribute("data-check") != "kept")
    first_object = next(c for c in cards if c.get_attribute("data-check") == "kept"
                        and c.get_attribute("data-kind") == "object" and not c.get_attribute("data-stratum").startswith(
                            "negative"))
    for card in cards[:-1]:
        driver.execute_script("arguments[0].scrollIntoView()", card)
        verdict = "disagree" if card in (first_reject, first_object) else "agree"
        if card == first_object:
            from selenium.webdriver.support.ui import Select

            Select(card.find_element("css selector", "select.code")).select_by_value("ERR_CROSS_MDL_OBJ_FLIP")
            card.find_element("css selector", "input.verdict-note").send_keys("caption says left")
        card.find_element("css selector", f"button.{verdict}").click()
        said[card.get_attribute("data-key")] = verdict
    last = cards[-1]
    driver.execute_script("arguments[0].scrollIntoView()", last)
    last.find_element("css selector", "header").click()
    driver.find_element("css selector", "body").send_keys("a")
    said[last.get_attribute("data-key")] = "agree"
    assert driver.find_element("id", "progress").text == f"{len(cards)} / {len(cards)} judged"
    return said


def test_clicked_verdicts_download_and_merge_to_the_expected_figures(
        driver: Any, review_page: Path, release_copy: Release, downloads: Path) -> None:
    said = click_through(driver, (review_page / "index.html").as_uri())
    driver.get((review_page / "index.html").as_uri())  # a reload keeps the verdicts
    assert driver.find_element("id", "progress").text == f"{len(said)} / {len(said)} judged"
    driver.find_element("id", "download").click()
    target = downloads / "verdicts-sw-v1-ana.jsonl"
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda _: target.exists() and target.stat().st_size > 0, "no download")
    verdicts = read_verdicts([target])
    assert {v.key: v.verdict for _, v in verdicts} == said and {v.reviewer for _, v in verdicts} == {"ana"}
    flip = next(v for _, v in verdicts if v.code is not None)
    assert flip.code == "ERR_CROSS_MDL_OBJ_FLIP" and flip.note == "caption says left"

    figures = merge_verdicts(release_copy, verdicts).figures
    checks = {v.key: v.check for _, v in verdicts}
    rejected = sorted({c for c in checks.values() if c != "kept"})
    first_reject = next(k for k, c in checks.items() if c != "kept")
    for code in rejected:
        n = sum(c == code for c in checks.values())
        k = n - (checks[first_reject] == code)
        assert (figures["precision"][code]["k"], figures["precision"][code]["n"]) == (k, n)
    kept = sum(c == "kept" for c in checks.values())
    assert (figures["miss_rate"]["all"]["k"], figures["miss_rate"]["all"]["n"]) == (1, kept)
    assert figures["miss_rate"]["by_code"] == {"ERR_CROSS_MDL_OBJ_FLIP": {
        "k": 1, "n": kept, "rate": 1 / kept, "wilson95": figures["miss_rate"]["all"]["wilson95"]}}


def test_the_served_page_posts_each_verdict(driver: Any, review_page: Path, tmp_path: Path) -> None:
    page = tmp_path / "page"
    shutil.copytree(review_page, page)
    server = make_server(page, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        open_fresh(driver, server.url)
        driver.find_element("id", "reviewer").send_keys("bob")
        cards = driver.find_elements("css selector", "section.sample")
        cards[0].find_element("css selector", "button.agree").click()
        cards[1].find_element("css selector", "button.disagree").click()
        wait_for(driver, "return document.getElementById('status').textContent.startsWith('saved on the server (2')",
                 "the server did not confirm both verdicts")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    first, second = (r["key"] for r in json.loads((page / "sample.json").read_text())["rows"][:2])
    lines = [json.loads(x) for x in (page / "verdicts.jsonl").read_text().splitlines()]
    assert [(x["key"], x["verdict"], x["reviewer"]) for x in lines] == [(first, "agree", "bob"),
                                                                       (second, "disagree", "bob")]


def test_the_readme_screenshot_is_made_by_this_code(review_page: Path, tmp_path: Path) -> None:
    """docs/review-page.png is ``python -m tests.review.browser out/releases/sample-world/demo
    docs/review-page.png`` after ``make demo``."""
    screenshot_page(review_page, tmp_path / "shot.png")
    shot = cv2.imread(str(tmp_path / "shot.png"))
    assert shot is not None and shot.shape[1] == 1100 and shot.shape[0] > 500
