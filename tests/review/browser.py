"""Headless Chromium for the review page tests: the Debian ``chromium`` and ``chromium-driver``
packages through selenium (nothing downloads a browser), and the README's screenshot.

    .venv/bin/python -m tests.review.browser RELEASE OUT.png   # the README's screenshot

writes a review page of RELEASE (seed 0) to a temporary directory and a screenshot of its first
cards to OUT.png.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (make install)"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium / chromium-driver not installed (Debian: apt-get install -y chromium chromium-driver)"
    return None


@contextmanager
def chromium(profile: Path, downloads: Path | None = None, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium session without network access beyond 127.0.0.1; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--force-device-scale-factor=1",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        if downloads is not None:
            driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                   {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
    finally:
        driver.quit()


SHOWCASE = ("section.sample[data-check='ERR_CROSS_MDL_OBJ_FLIP']", "section.sample[data-stratum='flipped']",
            "section.sample[data-kind='object']")


def screenshot_page(page_dir: Path, out_png: Path) -> None:
    """A screenshot of the page's bar over its first mirrored-caption reject (else a flipped
    augmentation, else any object card), with one verdict given."""
    with tempfile.TemporaryDirectory() as profile, chromium(Path(profile), width=1100, height=1000) as driver:
        driver.get((page_dir / "index.html").as_uri())
        driver.find_element("id", "reviewer").send_keys("ana")
        card = next(found[0] for sel in SHOWCASE if (found := driver.find_elements("css selector", sel)))
        card.find_element("css selector", "button.agree").click()
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'}); window.scrollBy(0, -90);", card)
        driver.save_screenshot(str(out_png))


def main(argv: list[str]) -> int:
    from pipeline.review.page import write_review_page
    from pipeline.review.release_rows import open_release
    from pipeline.review.sample import draw_sample

    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    release = open_release(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        write_review_page(release, draw_sample(release, seed=0, per_code=2, kept=2), Path(tmp) / "review")
        screenshot_page(Path(tmp) / "review", Path(argv[1]))
    print(f"screenshot: {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
