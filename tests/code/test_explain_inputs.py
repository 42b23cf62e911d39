"""Bad inputs of the explain step: clear errors, clearly marked results, nothing half-written."""

from __future__ import annotations

import json

import pytest
from tests.conftest import tiny_overrides

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.data.prepare import prepare
from glasswork.explain.step import explain


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in (root / "artifacts").rglob("*"))


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("explain.methods=[integrated_gradients,lime_typo]", ["lime_typo", "valid methods", "attention_rollout"]),
        ("explain.methods=[]", ["explain.methods=[]", "valid methods"]),
        ("explain.n_probe=31", ["explain.n_probe=31", "expected 1..30"]),
        ("explain.max_share_of_train=0", ["explain.max_share_of_train=0", "(0, 1]", "or null"]),
        ("explain.max_share_of_train=1.5", ["explain.max_share_of_train=1.5", "(0, 1]"]),
    ],
)
def test_bad_explain_settings_fail_clearly_and_write_nothing(override, words, tiny_run, capsys):
    root, _ = tiny_run
    before = _listing(root)
    assert main(["explain", *tiny_overrides(root, override)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert _listing(root) == before


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_texts_longer_than_the_model_maximum_are_truncated_and_marked(tiny_run):
    root, _ = tiny_run
    # 5 probe texts where the shared run explained 3: the probe is drawn from the test split by
    # the explain step itself, so a new size needs no new prepare (and no retraining under DVC).
    cfg = load_config(tiny_overrides(root, "model.max_length=8", "explain.n_probe=5"))
    prepare(cfg)  # model.max_length=8: the length is prepare's to record
    metrics = explain(cfg)
    assert metrics["n_truncated"] > 0
    items = json.loads((root / "artifacts" / "explain" / "attributions.json").read_text())["integrated_gradients"]
    assert all(len(i["tokens"]) <= 8 for i in items) and any(i["truncated"] for i in items)
    page = (root / "artifacts" / "explain" / "attributions.html").read_text()
    assert page.count("truncated, only the shown tokens were used") == sum(i["truncated"] for i in items)


@pytest.mark.slow  # tiny_run: the whole tiny pipeline, once a worker
def test_an_empty_text_gets_an_explanation_with_nothing_to_attribute(tiny_run):
    from glasswork.explain.faithfulness import faithfulness
    from glasswork.explain.step import METHODS
    from glasswork.models.backbone import load_tokenizer, load_trained

    root, cfg = tiny_run
    path = root / "artifacts" / "train" / "model"
    model, tokenizer = load_trained(path, attn_implementation="eager"), load_tokenizer(path)
    for name, method in METHODS.items():
        [item] = method(model, tokenizer, ["", "a fine film"], [0, 1], cfg)[:1]
        assert item.tokens == ["[CLS]", "[SEP]"], name
        quality = faithfulness(model, tokenizer, [item], [0.5], n_random=1)
        assert quality["comprehensiveness_aopc"] == 0.0, name  # nothing to delete, nothing changes
