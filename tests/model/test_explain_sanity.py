"""The cascading model-randomisation check (Adebayo et al. 2018; issue 22, item 6): layers are
re-initialised from the top down, one more at a time; a method passes when its Spearman with
every layer random is below the limit, and one that ignores the weights fails."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from tests.conftest import minilm_tokenizer
from tests.model.test_explain_baselines import roberta_tokenizer, tiny_bert, tiny_roberta

from glasswork.errors import ConfigError
from glasswork.explain.attributions import TokenAttribution, integrated_gradients
from glasswork.explain.embeddings import png_bytes
from glasswork.explain.sanity import MIN_TEXTS, cascade, cascade_figure, check_sanity, randomisation_check
from glasswork.explain.step import rank_agreement

TEXTS = [
    f"{a} {b} film with a {c} plot"
    for a in ("a great", "a dull", "one bad", "the best")
    for b in ("old", "new", "long", "short")
    for c in ("thin",)
]


def test_the_cascade_runs_from_the_head_down_to_the_embeddings():
    bert = tiny_bert(100)
    assert [name for name, _ in cascade(bert)] == ["head", "layer 1", "layer 0", "embeddings"]
    head = dict(cascade(bert))["head"]
    assert bert.classifier in head and bert.bert.pooler in head
    assert dict(cascade(bert))["layer 1"] == [bert.bert.encoder.layer[1]]
    roberta = tiny_roberta(20)  # no pooler: its head is the classifier alone
    assert dict(cascade(roberta))["head"] == [roberta.classifier]
    assert dict(cascade(roberta))["embeddings"] == [roberta.roberta.embeddings]


def _same(a: list[torch.nn.Module], b: list[torch.nn.Module]) -> bool:
    pairs = zip(torch.nn.ModuleList(a).state_dict().values(), torch.nn.ModuleList(b).state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_layers_are_reinitialised_top_down_and_cumulatively():
    model = tiny_bert(100)
    stages = cascade(model)
    random_after_each_call = []

    def explain_with(net):
        # Which of the net's stages no longer hold the trained weights.
        names = dict(cascade(net))
        random_after_each_call.append([n for n, trained in stages if not _same(names[n], trained)])
        return {"m": [TokenAttribution("t", ["[CLS]", "a", "b", "c", "[SEP]"], [0, 1, 2, 3, 0], 0, 0.5, 0, 0, False)]}

    metrics, curves = randomisation_check(model, explain_with, rank_agreement, seed=0, max_spearman=0.5)
    assert random_after_each_call == [
        [],  # the trained model
        ["head"],
        ["head", "layer 1"],
        ["head", "layer 1", "layer 0"],
        ["head", "layer 1", "layer 0", "embeddings"],
    ]
    assert list(curves["m"]) == ["head", "layer 1", "layer 0", "embeddings"]
    assert _same([model], [tiny_bert(100)])  # the model itself is left as it was


def _gradients(tok):
    def explain_with(net) -> dict[str, list[TokenAttribution]]:
        items = integrated_gradients(net, tok, TEXTS, [0] * len(TEXTS), max_length=16, n_steps=4)
        return {"integrated_gradients": items}

    return explain_with


def test_explanations_that_follow_the_weights_pass_and_ones_that_ignore_them_fail():
    tok = minilm_tokenizer()
    model = tiny_bert(tok.vocab_size)
    gradients = _gradients(tok)

    def by_length(net) -> dict[str, list[TokenAttribution]]:
        # Scores from the text alone: the longer the word, the higher (no weight is read).
        items = []
        for text in TEXTS:
            tokens = tok.convert_ids_to_tokens(tok(text)["input_ids"])
            scores = [float(len(t)) + 0.01 * k for k, t in enumerate(tokens)]
            items.append(TokenAttribution(text, tokens, scores, 0, 0.5, 0, 0.0, False))
        return {"word_length": items}

    assert len(TEXTS) >= MIN_TEXTS
    metrics, curves = randomisation_check(
        model, lambda net: gradients(net) | by_length(net), rank_agreement, seed=0, max_spearman=0.5
    )
    assert metrics["integrated_gradients/randomisation_passed"] == 1.0, curves
    assert metrics["integrated_gradients/randomisation_spearman_mean"] < 0.5
    assert metrics["word_length/randomisation_passed"] == 0.0
    assert metrics["word_length/randomisation_spearman_mean"] == pytest.approx(1.0)
    # One Spearman per stage, the last one the rule's.
    ig = [metrics[f"integrated_gradients/randomisation_spearman_{k}"] for k in (1, 2, 3, 4)]
    assert ig == list(curves["integrated_gradients"].values())
    assert ig[-1] == metrics["integrated_gradients/randomisation_spearman"]
    # The curve is drawn, one point per stage for each method.
    fig = cascade_figure(curves, len(TEXTS), 0.5)
    lines = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in lines] == [ig, list(curves["word_length"].values())]
    image = Image.open(io.BytesIO(png_bytes(fig)))
    assert image.format == "PNG" and image.size[0] > 400


def test_a_method_blind_to_every_layer_but_the_embeddings_fails_though_its_last_point_is_low():
    tok = minilm_tokenizer()
    model = tiny_bert(tok.vocab_size)

    def embedding_norms(net) -> dict[str, list[TokenAttribution]]:
        # Reads the word embeddings only: unmoved until the cascade reaches them.
        items = []
        for text in TEXTS:
            ids = tok(text)["input_ids"]
            scores = net.get_input_embeddings().weight[ids].norm(dim=-1).tolist()
            items.append(TokenAttribution(text, tok.convert_ids_to_tokens(ids), scores, 0, 0.5, 0, 0.0, False))
        return {"norms": items}

    metrics, curves = randomisation_check(model, embedding_norms, rank_agreement, seed=0, max_spearman=0.5)
    assert list(curves["norms"].values())[:3] == pytest.approx([1.0, 1.0, 1.0])
    assert metrics["norms/randomisation_spearman"] < 0.5  # all layers random: it has moved at last
    assert metrics["norms/randomisation_spearman_mean"] > 0.5 and metrics["norms/randomisation_passed"] == 0.0


def test_a_roberta_style_model_goes_through_the_check():
    tok = roberta_tokenizer()
    model = tiny_roberta(len(tok))
    texts = ["a fine film", "bad movie dull plot", "great actor", "dull plot bad film"]

    def explain_with(net):
        return {"ig": integrated_gradients(net, tok, texts, [0] * len(texts), max_length=16, n_steps=4)}

    metrics, curves = randomisation_check(model, explain_with, rank_agreement, seed=0, max_spearman=0.5)
    assert list(curves["ig"]) == ["head", "layer 1", "layer 0", "embeddings"]
    assert "ig/randomisation_spearman_4" in metrics


@pytest.mark.parametrize("n", [4, 15, None, True])
def test_a_check_on_fewer_than_16_texts_or_8_tokens_is_refused(n):
    with pytest.raises(ConfigError, match=r"explain.sanity_n_texts=.*expected at least 16 texts"):
        check_sanity(n, None)
    with pytest.raises(ConfigError, match=r"explain.sanity_max_length=4: expected at least 8 tokens"):
        check_sanity(16, 4)
    check_sanity(16, None)
    check_sanity(16, 48)
