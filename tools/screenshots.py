"""Screenshots of the console's main pages, for the README: ``python -m tools.screenshots``.

Run it after ``make demo`` (or against any console with ``--url``): it opens each page in Debian's
Chromium (the one the browser tests drive) and writes ``docs/images/console-<page>.png``. The model is
the first one the console lists unless ``--model`` names one; the evaluation shown is its newest
version's earliest promotion (a judged comparison, with its plots), else its newest decision.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

CHROMIUM_ENV = "FERRY_CHROMIUM"
OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def chromium_path() -> str:
    """The system Chromium; an error that says how to get it when it is missing."""
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError(
            "no chromium: install Debian's package (bash tools/system-packages.sh, or apt-get install chromium), "
            f"or set {CHROMIUM_ENV} to a Chromium binary"
        )
    return found


def shoot(url: str, model: str | None, out: Path) -> list[Path]:
    """Write one PNG per page; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        page.goto(url)
        if model is None:
            rows = page.locator("[data-testid^='model-row-']")
            if rows.count() == 0:
                raise RuntimeError(f"the console at {url} lists no model: run `make demo` first")
            model = (rows.first.get_attribute("data-testid") or "").removeprefix("model-row-")
        written.append(_shot(page, f"{url}/", out / "console-models.png"))
        written.append(_shot(page, f"{url}/models/{model}", out / "console-model.png"))
        links = page.locator("[data-testid^='report-link-']")
        if links.count():
            version = re.sub(r"\D", "", links.first.get_attribute("data-testid") or "")
            evaluation = f"{url}/models/{model}/versions/{version}/evaluation"
            page.goto(evaluation)
            promoted = page.locator("a", has_text="promote")  # a judged comparison: its plots and tests
            if promoted.count():
                href = promoted.last.get_attribute("href") or ""
                evaluation = f"{evaluation}{href}" if href.startswith("?") else evaluation  # ?index=N
            written.append(_shot(page, evaluation, out / "console-evaluation.png", full_page=True))
        for name in ("training", "alerts", "dead-letters"):
            written.append(_shot(page, f"{url}/{name}", out / f"console-{name}.png"))
        browser.close()
    return written


def _shot(page: object, url: str, path: Path, *, full_page: bool = False) -> Path:
    page.goto(url)  # type: ignore[attr-defined]
    page.wait_for_load_state("networkidle")  # type: ignore[attr-defined]  # the plots are drawn by then
    page.screenshot(path=str(path), full_page=full_page)  # type: ignore[attr-defined]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("FERRY_CONSOLE_URL", "http://127.0.0.1:8085"))
    parser.add_argument("--model", help="the model whose pages to show (default: the first listed)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder of the PNGs (default {OUT})")
    args = parser.parse_args(argv)
    try:
        for path in shoot(args.url.rstrip("/"), args.model, args.out):
            print(path)
    except RuntimeError as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
