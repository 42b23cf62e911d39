"""User data on Glasswork's pages stays text (issue 22, item 2).

A training text, a batch text, a class name and a metadata column name (and a batch name) each
carry markup that would run a script if a page wrote them raw. Each page is made by the code
that writes it in the pipeline (Evidently's drift report, the batch map of ``drift`` and
``monitor``, the explain step's embedding map and ``attributions.html``), from tiny inputs and
no trained model, then loaded in headless Chromium: no script of the data may run, the console
stays free of errors, and the page still draws.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import learnable_rows, minilm_tokenizer, tiny_overrides
from tests.integration.browser import render

from glasswork.config import load_config
from glasswork.drift import View, batch_map, compare, with_metadata
from glasswork.explain import report
from glasswork.explain.attributions import TokenAttribution
from glasswork.explain.embeddings import data_uri, png_bytes, project, projection_page
from glasswork.explain.global_importance import class_evidence, top_words, top_words_figure
from glasswork.explain.global_view import global_summary
from glasswork.text_descriptors import text_descriptors

# A closing tag for Evidently's inlined data, and markup for any page that writes text as HTML.
HOSTILE = '</script><script>document.body.dataset.pwned=1</script> <img src=x onerror="document.body.dataset.pwned=1">'
# One word per carrier, each a single token of MiniLM's vocabulary (so it survives on the
# attributions page too): that the word is in the page shows the hostile string reached it.
TRAIN_TEXT = f"the film is violin and moving {HOSTILE}"
BATCH_TEXT = f"rocket launch trumpet outage {HOSTILE}"
LABEL = f"harp {HOSTILE}"
COLUMN = f"cello {HOSTILE}"
BATCH = f"banjo {HOSTILE}"
NAMES = ["neg", LABEL]
N = 60
PWNED = "document.body.hasAttribute('data-pwned')"
# Open what Evidently draws only on a click (a row's details, each tab of a text column's
# characteristic words and examples), so the texts shown there are rendered too.
OPEN_ALL = """(async () => {
  const pause = () => new Promise(done => setTimeout(done, 150));
  for (const button of document.querySelectorAll('tbody tr td:first-child button')) button.click();
  await pause();
  const tabs = [...document.querySelectorAll('[role=tab]')];
  for (const tab of tabs) { tab.click(); await pause(); }
  return tabs.length;
})()"""


def shown_as_text(data: str) -> str:
    """A JavaScript expression: does a text node of the page (not a script's) hold ``data`` as it is?"""
    return f"""(data => {{
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walk.nextNode());)
    if (!node.parentElement.closest('script, style') && node.data.includes(data)) return true;
  return false;
}})({json.dumps(data)})"""


def _view(texts: list[str], labels: list[str], source: list[str], seed: int) -> View:
    """What ``describe`` gives, without a model (random embeddings and probabilities), with a
    metadata column named ``COLUMN``."""
    rng = np.random.default_rng(seed)
    frame = text_descriptors(texts, minilm_tokenizer())
    frame.insert(0, "text", texts)
    probs = rng.dirichlet([2, 2], len(texts))
    frame["predicted_probability"] = probs[:, 1]
    frame["label"] = labels
    metadata = pd.DataFrame({COLUMN: pd.array(source, dtype="string")})
    return with_metadata(View(frame, rng.normal(size=(len(texts), 8)), probs), metadata, [COLUMN], metadata)


def _attributions_page(texts: list[str], labels: list[int]) -> str:
    """``attributions.html`` as the explain step writes it, over hand-made attributions of
    ``texts``' real tokens, with the global view's summary and figure of their words."""
    tokenizer = minilm_tokenizer()
    rng = np.random.default_rng(0)
    items = []
    for text, label in zip(texts, labels, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        scores = [0.0, *rng.normal(size=len(tokens) - 2), 0.0]
        items.append(TokenAttribution(text, tokens, scores, label, 0.9, label, 0.0, False))
    top = top_words(class_evidence(items, len(NAMES)), NAMES, min_count=1, top_k=10)
    quality = {"comprehensiveness_aopc": 0.3, "comprehensiveness_gain": 0.1, "sufficiency_aopc": 0.2}
    view = {"n_steps": 2, "mean_abs_delta": 0.01, "n_texts": len(items), "min_count": 1, "top_words": top}
    summary = global_summary(view | {"faithfulness": quality | {"sufficiency_gain": -0.1}})
    figure = {"Words that push the model towards each class": data_uri(png_bytes(top_words_figure(top, 4, 1)))}
    return report.render({"integrated_gradients": items}, NAMES, "token attributions", summary, figure)


def _image_attributions_page() -> str:
    """The image task's ``attributions.html`` (``explain.image_step``), over two probe images whose
    classes are named ``NAMES`` (a class folder may be named anything a file system allows)."""
    from glasswork.explain.image_step import _page

    probe = pd.DataFrame({"label": [0, 1]})
    probs = np.array([[0.8, 0.2], [0.3, 0.7]])
    metrics = {
        f"integrated_gradients/{k}": 0.1
        for k in (
            "comprehensiveness_aopc",
            "random_comprehensiveness_aopc",
            "sufficiency_aopc",
            "random_sufficiency_aopc",
        )
    }
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.eye(8))
    figure = {"Where the model looks": png_bytes(fig)}
    cfg = load_config(["task=image_classification"])
    return _page(probe, probs, NAMES, metrics, ["integrated_gradients"], figure, cfg)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, list[str], list[str]]]:
    """Each page, with the marker words of the hostile strings it is given and the strings it
    shows (where a user reads them without a click or a hover)."""
    root = tmp_path_factory.mktemp("hostile")
    cfg = load_config(tiny_overrides(root, "drift.text_method=abs_text_content_drift", "drift.embeddings_plot=false"))
    train = [TRAIN_TEXT if i % 4 == 0 else text for i, (text, _) in enumerate(learnable_rows(N, 0))]
    batch = [f"{BATCH_TEXT} {i}" for i in range(N)]
    labels = [NAMES[i % 2] for i in range(N)]
    reference = _view(train, labels, ["web"] * N, 1)
    current = _view(batch, labels, ["print"] * N, 2)
    compare(reference, current, cfg).save_html(root / "drift_report.html")
    points, used = project(reference.embeddings, "pca", seed=0)
    classes = np.arange(N) % 2
    written = {
        "batch_map.html": batch_map(reference, current, NAMES, BATCH, cfg),
        "projection.html": projection_page(points, train, classes, reference.probs, NAMES, used),
        "attributions.html": _attributions_page(train[:4], list(classes[:4])),
        "image_attributions.html": _image_attributions_page(),
    }
    for name, page in written.items():
        (root / name).write_text(page, encoding="utf-8")
    return {
        "drift_report.html": (root / "drift_report.html", ["violin", "trumpet", "harp", "cello"], [COLUMN]),
        "batch_map.html": (root / "batch_map.html", ["violin", "trumpet", "harp", "banjo"], [LABEL, BATCH]),
        "projection.html": (root / "projection.html", ["violin", "harp"], [LABEL]),
        "attributions.html": (root / "attributions.html", ["violin", "harp"], [LABEL]),
        "image_attributions.html": (root / "image_attributions.html", ["harp"], [LABEL]),
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "name", ["drift_report.html", "batch_map.html", "projection.html", "attributions.html", "image_attributions.html"]
)
def test_user_data_on_a_page_is_shown_as_text_and_runs_no_script(name, pages, tmp_path):
    path, markers, strings = pages[name]
    source = path.read_text(encoding="utf-8")
    assert [m for m in markers if m not in source] == [], "a hostile string never reached the page"
    checks = {shown_as_text(data): data for data in strings}
    shown = render(path, tmp_path / "profile", [OPEN_ALL, PWNED, *checks])
    assert shown.values[PWNED] is False, "a script from the data ran"
    assert shown.errors == [], shown.errors
    assert not shown.blank, "the page did not draw"
    assert [data for check, data in checks.items() if not shown.values[check]] == [], "not shown as the text it is"
