"""The explanation page and the drift report render in headless Chromium (Debian's package):
a non-blank screenshot and no console errors (read over the DevTools protocol)."""

from __future__ import annotations

import pytest
from tests.integration.browser import render


@pytest.mark.slow  # trained_tiny_root: the whole tiny pipeline, once a worker
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
    shown = render(trained_tiny_root / "artifacts" / page, tmp_path / "profile")
    assert shown.errors == [], shown.errors
    assert not shown.blank, "the screenshot is blank or has no text"


@pytest.mark.integration
def test_the_render_check_reads_console_errors_and_uncaught_exceptions(tmp_path):
    page = tmp_path / "faulty.html"
    page.write_text(
        "<!doctype html><body><h1>A page that logs an error</h1>"
        "<script>console.error('drawn wrong'); setTimeout(() => { throw new Error('late failure') }, 100)</script>",
        encoding="utf-8",
    )
    shown = render(page, tmp_path / "profile", ["document.title"])
    assert shown.errors[0] == "console.error: drawn wrong"
    assert "late failure" in shown.errors[1] and len(shown.errors) == 2, shown.errors
    assert shown.values == {"document.title": ""}
    assert shown.blank  # one heading on a 1200x1600 page: too little drawn to count as a report
