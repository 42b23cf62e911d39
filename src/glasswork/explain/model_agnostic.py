"""A model-agnostic explainer: Kernel SHAP (Lundberg & Lee, 2017) over tokens, with Captum.

It never looks inside the model: it replaces random subsets of a text's tokens with [PAD],
calls the model, and fits the weighted linear model whose coefficients are the tokens'
Shapley-value estimates. So it explains any classifier the same way, and disagrees with the
gradient-based methods where they lean on the model's internals.
"""

from __future__ import annotations

import torch
from captum.attr import KernelShap

from glasswork.explain.attributions import (
    TokenAttribution,
    internal_batch,
    model_device,
    pad_baseline,
    token_budget_for,
)


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

    ``n_samples`` coalitions per text, whatever its length (the cap on the model calls); they go
    through the model about ``token_budget`` tokens at a time, as integrated gradients' steps do,
    so a long text takes passes of fewer coalitions (the same coalitions: the seed draws them).
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
        per_pass = min(n_samples, internal_batch(token_budget or token_budget_for(ids.device), ids.shape[1]))
        torch.manual_seed(seed)  # Kernel SHAP samples coalitions at random: same seed, same answer
        scores = explainer.attribute(
            ids,
            baselines=baseline,
            target=predicted,
            additional_forward_args=(mask,),
            feature_mask=torch.arange(ids.shape[1], device=ids.device).unsqueeze(0),
            n_samples=n_samples,
            perturbations_per_eval=per_pass,
        )[0]
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
