"""Evidently's inlined report data is made inert (issue 22, item 2) without changing a value."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from glasswork.drift_report import _DATA_LINE, build_drift_report, inert_data

HOSTILE = "</script><script>document.body.dataset.pwned=1</script><!-- <img src=x onerror=alert(1)>"


def _split(page: str) -> tuple[list[str], list[str]]:
    """The page's inlined data values (parsed and written back in one form) and its other lines."""
    lines = page.split("\n")
    data = [json.dumps(json.loads(m.group(2))) for line in lines if (m := _DATA_LINE.match(line))]
    return data, [line for line in lines if not _DATA_LINE.match(line)]


def test_the_inlined_data_keeps_every_value_and_no_text_can_close_its_script(tmp_path):
    reference = pd.DataFrame({"text": [f"a calm film review number {i}" for i in range(40)], "score": range(40)})
    current = pd.DataFrame({"text": [f"rocket launch {i} {HOSTILE}" for i in range(40)], "score": range(3, 43)})
    result = build_drift_report(
        reference, current, text_columns=["text"], numerical_columns=["score"], text_method="abs_text_content_drift"
    )
    raw = result.snapshot.get_html_str(as_iframe=False)
    assert HOSTILE in raw  # Evidently 0.7.23 writes the batch's texts into its <script> as they are
    page = inert_data(raw)
    (data, rest), (raw_data, raw_rest) = _split(page), _split(raw)
    assert data == raw_data and rest == raw_rest  # the same values; nothing else on the page changed
    assert "<" not in "".join(line for line in page.split("\n") if _DATA_LINE.match(line))
    written = result.save_html(tmp_path / "report.html").read_text(encoding="utf-8")
    assert HOSTILE not in written and written.count("</script>") == sum(line.count("</script>") for line in rest)


def test_a_page_whose_template_changed_is_refused_not_half_escaped():
    with pytest.raises(RuntimeError, match="1 inlined data lines, expected 2"):
        inert_data("<script>\n    var metric_" + "a" * 32 + ' = {"x": 1};\n</script>')
    broken = "\n".join(f'var {p}metric_{"b" * 32} = {{"x": 1;' for p in ("", "additional_graphs_"))
    with pytest.raises(RuntimeError, match="not one JSON value"):
        inert_data(broken)
