"""A model-agnostic explainer: Kernel SHAP (Lundberg & Lee, 2017) over tokens, with Captum.

It never looks inside the model: it replaces random subsets of a text's tokens with the pad
token, calls the model, and fits the weighted linear model whose coefficients are the tokens'
Shapley-value estimates. So it explains any classifier the same way, and disagrees with the
gradient-based methods where they lean on the model's internals.

Each text's tokens are its features, and its start/end tokens one more (they stay in every
coalition, as in the baseline: a dummy player, scored 0). A regression needs more coalitions than
features: a text gets at least :data:`COALITIONS_PER_FEATURE` per feature, and more than
``explain.shap_samples`` where it is long.
"""

from __future__ import annotations

import math

import torch
from captum.attr import KernelShap

from glasswork.explain.attributions import (
    TokenAttribution,
    frame_ids,
    internal_batch,
    model_device,
    pad_baseline,
    token_budget_for,
)

COALITIONS_PER_FEATURE = 2


def coalitions(n_features: int, n_samples: int) -> int:
    """Coalitions drawn for a text of ``n_features`` features: ``n_samples``, or twice its
    features where that is more (fewer leave the regression under-determined)."""
    return max(n_samples, math.ceil(COALITIONS_PER_FEATURE * n_features))


def token_features(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Captum's feature mask for one text (shape 1 x length): the start/end tokens share feature
    0, every other token is its own feature 1, 2, ..."""
    frame = torch.isin(ids[0], torch.tensor(frame_ids(tokenizer), device=ids.device))
    ordinary = torch.cumsum((~frame).long(), 0) - int(not frame.any())  # numbered from 0 without a frame
    return torch.where(frame, 0, ordinary).unsqueeze(0)


def kernel_shap(
    model,
    tokenizer,
    texts: list[str],
    labels: list[int],
    *,
    max_length: int,
    n_samples: int,
    seed: int,
    token_budget: int | None = None,
) -> list[TokenAttribution]:
    """Kernel SHAP scores of every token towards each text's predicted class.

    At least ``n_samples`` coalitions per text, and twice its features where that is more
    (:func:`coalitions`); they go through the model about ``token_budget`` tokens at a time, as
    integrated gradients' steps do, so a long text takes passes of fewer coalitions (the same
    coalitions: the seed draws them).
    """
    model.eval()

    @torch.inference_mode()
    def forward(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.expand(ids.shape[0], -1)
        return torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)

    explainer = KernelShap(forward)
    results = []
    for text, label in zip(texts, labels, strict=True):
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt").to(model_device(model))
        ids, mask = enc["input_ids"], enc["attention_mask"]
        probs = forward(ids, mask)[0]
        predicted = int(probs.argmax())
        baseline = pad_baseline(ids, tokenizer)
        features = token_features(ids, tokenizer)
        if int(features.max()) == 0:
            # One feature (an empty text's frame, say): Captum's sampler needs two, and the one
            # feature's Shapley value is the whole gap, exactly.
            gap = probs[predicted] - forward(baseline, mask)[0, predicted]
            scores = (baseline[0] != ids[0]).float() * gap
        else:
            drawn = coalitions(int(features.max()) + 1, n_samples)
            per_pass = min(drawn, internal_batch(token_budget or token_budget_for(ids.device), ids.shape[1]))
            torch.manual_seed(seed)  # Kernel SHAP samples coalitions at random: same seed, same answer
            scores = explainer.attribute(
                ids,
                baselines=baseline,
                target=predicted,
                additional_forward_args=(mask,),
                feature_mask=features,
                n_samples=drawn,
                perturbations_per_eval=per_pass,
            )[0]
            # The frame's shared feature is a dummy player (the same in every coalition): its
            # Shapley value is 0, whatever noise the regression gave it.
            scores = scores * (baseline[0] != ids[0])
        results.append(
            TokenAttribution(
                text=text,
                tokens=tokenizer.convert_ids_to_tokens(ids[0].tolist()),
                scores=scores.float().cpu().tolist(),
                predicted=predicted,
                probability=float(probs[predicted]),
                label=int(label),
                delta=float("nan"),
                truncated=len(tokenizer(text, truncation=False, verbose=False)["input_ids"]) > max_length,
            )
        )
    return results
