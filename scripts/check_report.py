"""Open a report.html in headless Chromium and say whether every figure was drawn and every section has content.

Why: the report is one self-contained HTML file (PNG figures as data URIs); a broken figure or an empty section
only shows in a browser, not in the Python that wrote it. The page is loaded with a small script appended that
counts images the browser decoded (``naturalWidth > 0``) and ``<h2>`` sections with nothing (no text, no image)
before the next heading; Chromium's ``--dump-dom`` returns the page after that script ran. ``--screenshot``
writes what a reader's first screen shows (the README's picture of the report comes from here).

    python scripts/check_report.py [checkpoints/<run> | report.html] [--screenshot docs/report.png]
    make report-check RUN=checkpoints/<run>

Needs a Chromium binary (Debian: ``apt-get install chromium``); exits 2 with that hint when there is none.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const heads = [...document.querySelectorAll("h2")];
  const empty = heads.filter((h) => {
    for (let n = h.nextElementSibling; n && n.tagName !== "H2"; n = n.nextElementSibling) {
      if (n.textContent.trim() || n.tagName === "IMG" || n.querySelector("img")) return false;
    }
    return true;
  }).map((h) => h.textContent.trim());
  const out = document.createElement("pre");
  out.id = "report-check";
  out.textContent = JSON.stringify({
    images: imgs.length,
    drawn: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
    sections: heads.map((h) => h.textContent.trim()),
    empty_sections: empty,
  });
  document.body.appendChild(out);
});
</script>"""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]


def chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def check_report(report: str | Path, screenshot: str | Path | None = None, timeout: float = 120) -> dict[str, Any]:
    """Render ``report`` in headless Chromium: ``{"images", "drawn", "sections", "empty_sections"}``; with
    ``screenshot``, also a 1200 x 900 PNG of the page's first screen."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium on PATH (Debian: apt-get install chromium)")
    report = Path(report).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        text = report.read_text()
        page.write_text(text.replace("</body>", PROBE + "</body>") if "</body>" in text else text + PROBE)
        common = [binary, *FLAGS, f"--user-data-dir={tmp}/profile"]  # its own profile: a user's browser untouched
        dom = subprocess.run(
            [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout, check=True
        ).stdout
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [*common, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri()],
                capture_output=True,
                timeout=timeout,
                check=True,
            )
    found = re.search(r'<pre id="report-check">(.*?)</pre>', dom, re.S)
    if found is None:
        raise RuntimeError(f"{report}: Chromium rendered the page but the check script did not run")
    return json.loads(html.unescape(found.group(1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("report", type=Path, nargs="?", help="report.html or a run directory (default: the newest)")
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.report is None:
        found = sorted(Path("checkpoints").glob("*/analysis/report.html"), key=lambda p: p.stat().st_mtime)
        args.report = found[-1] if found else Path("checkpoints/<run>/analysis/report.html")
    elif args.report.is_dir():
        args.report = args.report / "analysis" / "report.html"
    if not args.report.is_file():
        print(f"{args.report}: no such report (run `make analyze` first)", file=sys.stderr)
        return 2
    try:
        got = check_report(args.report, args.screenshot)
    except FileNotFoundError as e:
        print(f"check_report: {e}", file=sys.stderr)
        return 2
    ok = got["images"] > 0 and got["drawn"] == got["images"] and not got["empty_sections"]
    print(
        f"{args.report}: {got['drawn']}/{got['images']} figures drawn, {len(got['sections'])} sections"
        + (f", empty: {got['empty_sections']}" if got["empty_sections"] else "")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
