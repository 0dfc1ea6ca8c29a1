"""Regenerate docs/html-report.png, the README's picture of the HTML report.

    python docs/make_screenshot.py      # needs chromium (apt) and playwright (pip)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "segmenter.html"
        subprocess.run([sys.executable, "-m", "archlint", "examples/segmenter.py", "--format", "html",
                        "-o", str(page_path)], cwd=ROOT, check=False)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 1130}).new_page()
            page.goto(page_path.as_uri())
            page.wait_for_function("document.body.dataset.ready === '1'")
            page.click("div.finding.error")  # the skip mismatch: its op selected, details shown
            page.screenshot(path=str(ROOT / "docs" / "html-report.png"))
            browser.close()


if __name__ == "__main__":
    main()
