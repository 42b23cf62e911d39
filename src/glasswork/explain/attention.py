"""Attention rollout (Abnar & Zuidema, ACL 2020, https://arxiv.org/abs/2005.00928).

Attention weights of one layer say little about which input tokens a prediction used, because
every layer mixes tokens again. Rollout follows the mixing through the layers: average the
heads, add the residual connection (identity), renormalise, and multiply the layers' matrices;
the [CLS] row of the product scores the input tokens. The scores are unsigned: attention says
what was looked at, not in which direction it pushed.

Needs the model loaded with ``attn_implementation="eager"``: fused kernels (SDPA, flash)
return no attention weights.
"""

from __future__ import annotations

import torch

from glasswork.errors import ConfigError
from glasswork.explain.attributions import TokenAttribution, model_device


@torch.inference_mode()
def attention_rollout(
    model, tokenizer, texts: list[str], labels: list[int], *, max_length: int
) -> list[TokenAttribution]:
    """Rollout scores of every token for each text (towards [CLS], the classifier's input)."""
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    enc = enc.to(model_device(model))
    full_lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_attentions=True)
    if not out.attentions or any(a is None for a in out.attentions):
        raise ConfigError(
            "the model returned no attention weights (fused attention kernels do not): "
            "load it with attn_implementation='eager' for attention_rollout"
        )
    probs = torch.softmax(out.logits.float(), dim=-1)
    predicted = probs.argmax(-1)
    rollout = _rollout(out.attentions, enc["attention_mask"]).float().cpu()
    probs, predicted, enc = probs.cpu(), predicted.cpu(), enc.to("cpu")
    results = []
    for i, text in enumerate(texts):
        n = int(enc["attention_mask"][i].sum())
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][i, :n].tolist())
        results.append(
            TokenAttribution(
                text=text,
                tokens=tokens,
                scores=[float(s) for s in rollout[i, 0, :n]],
                predicted=int(predicted[i]),
                probability=float(probs[i, predicted[i]]),
                label=int(labels[i]),
                delta=float("nan"),  # completeness is an integrated-gradients property
                truncated=full_lengths[i] > max_length,
            )
        )
    return results


def _rollout(attentions: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
    """Product over layers of (mean-head attention + identity), rows renormalised."""
    size = attentions[0].shape[-1]
    eye = torch.eye(size, device=mask.device).expand(mask.shape[0], size, size)
    keep = mask[:, None, :].float()  # no mass flows to padding
    result = eye.clone()
    for layer in attentions:
        mixed = layer.float().mean(dim=1) * keep + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result
