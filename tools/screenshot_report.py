"""Render an HTML report in a real headless browser (Debian's `chromium`) and save a PNG screenshot.

    python tools/screenshot_report.py report.html shot.png [--width 1400 --height 4000]

Exits 2 with a message when no chromium/chrome binary is found. Used by tests/unit/test_report.py.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 4000, timeout: float = 120) -> Path:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no headless browser found (tried {', '.join(BROWSERS)}); apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:  # a throwaway profile: no state shared between runs
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={Path(png).resolve()}", Path(html).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not Path(png).is_file():
        raise RuntimeError(f"{browser} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return Path(png)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000)
    a = p.parse_args()
    try:
        print(screenshot(a.html, a.png, a.width, a.height))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
