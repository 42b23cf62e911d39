"""The explanation page and the drift report render in headless Chromium (Debian's package):
a non-blank screenshot and no console errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1200,1600",
]


def _chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser)")
    return found


def _render(page: Path, out: Path, profile: Path) -> tuple[np.ndarray, list[str]]:
    done = subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.is_file(), done.stderr[-2000:]
    errors = [
        line for line in done.stderr.splitlines() if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)
    ]
    return np.asarray(Image.open(out).convert("L")), errors


@pytest.mark.integration
@pytest.mark.parametrize(
    "page",
    [
        "explain/attributions.html",
        "explain/embeddings.html",
        "drift/report.html",
        "drift/explanation_report.html",
        "drift/embeddings.html",
    ],
)
def test_report_renders_in_headless_chromium(page, trained_tiny_root, tmp_path):
    pixels, errors = _render(trained_tiny_root / "artifacts" / page, tmp_path / "shot.png", tmp_path / "profile")
    assert errors == [], errors
    assert pixels.std() > 5, "the screenshot is blank"
    assert (pixels < 128).mean() > 0.002, "no dark pixels: no text was drawn"
