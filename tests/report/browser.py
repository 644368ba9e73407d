"""Open a page in headless Debian chromium: screenshot, rendered DOM, console messages."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? (.*)")


@dataclass
class Page:
    dom: str
    console: list[str]  # every console message the page produced (errors included)
    screenshot: Path | None


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def open_page(html: Path, screenshot: Path | None = None, size=(1200, 2400)) -> Page:
    """Load ``html`` twice (dump the DOM, then take a screenshot); collect console lines."""
    exe = chromium()
    url = html.resolve().as_uri()
    console: list[str] = []
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120
        )
        console += _console_lines(dom.stderr)
        if screenshot is not None:
            shot = subprocess.run(
                [*base, f"--screenshot={screenshot}", url],
                capture_output=True,
                text=True,
                timeout=120,
            )
            console += _console_lines(shot.stderr)
            assert screenshot.is_file(), shot.stderr[-2000:]
    return Page(dom=dom.stdout, console=console, screenshot=screenshot)


def _console_lines(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := _CONSOLE.search(line))]
