"""Integrated gradients (Sundararajan et al., 2017) on the token embeddings, with Captum.

The baseline keeps the model's own start/end tokens (the ones its tokenizer wraps every text in:
[CLS]/[SEP] for BERT, <s>/</s> for RoBERTa) and replaces every other token with the pad token, so
attributions measure what each word contributes beyond an empty sentence of the same length. An
[UNK] (an emoji in a tweet, say) is an ordinary token here: it is replaced too, and so scored.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from captum.attr import IntegratedGradients

log = logging.getLogger(__name__)


@dataclass
class TokenAttribution:
    """One text's explanation: its tokens, their attribution to the predicted class, the prediction."""

    text: str
    tokens: list[str]
    scores: list[float]
    predicted: int
    probability: float
    label: int
    delta: float  # IG convergence delta: sum(attributions) - (f(x) - f(baseline))
    truncated: bool

    def to_dict(self) -> dict:
        return asdict(self)


def frame_ids(tokenizer) -> list[int]:
    """The ids of the tokens the tokenizer wraps every text in (its start/end tokens), read from
    what it makes of an empty text rather than from BERT's names."""
    return sorted(set(tokenizer("", add_special_tokens=True)["input_ids"]))


def frame_tokens(tokenizer) -> set[str]:
    """The start/end tokens and the pad token, as strings: what no explanation ranks."""
    return set(tokenizer.convert_ids_to_tokens(frame_ids(tokenizer))) | {tokenizer.pad_token}


def pad_baseline(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """The same sequences with every token but the start/end ones replaced by the pad token.

    Only those are kept: ``all_special_ids`` also holds [UNK] and [MASK], which would make every
    [UNK] its own baseline and so worth nothing.
    """
    frame = torch.isin(input_ids, torch.tensor(frame_ids(tokenizer), device=input_ids.device))
    return torch.where(frame, input_ids, torch.full_like(input_ids, tokenizer.pad_token_id))


def model_device(model) -> torch.device:
    """Where the model's weights are (inputs must go there)."""
    return next(model.parameters()).device


CPU_TOKEN_BUDGET = 2048
GPU_BYTES_PER_TOKEN = 160_000  # peak memory of one token's forward + backward (MiniLM, fp32, measured)
GPU_TOKEN_CAP = 131_072


def token_budget_for(device: torch.device | str) -> int:
    """Tokens per forward pass when none is configured.

    On the CPU, Captum's default (every step of every text in one pass) took 1.87x the floor and
    10.5 GB for 32 reviews on 2 cores, while ~2,000 tokens per pass took ~1.0x and 0.4 GB: far
    bigger passes are slower (cache misses). A GPU is the other way round: on an H200 one pass of
    75,000 tokens took 0.25x the time of 32-example passes, so the budget there is a quarter of
    the free memory.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(GPU_TOKEN_CAP, max(CPU_TOKEN_BUDGET, free // 4 // GPU_BYTES_PER_TOKEN)))


def internal_batch(token_budget: int, sequence_length: int) -> int:
    """Interpolated examples per forward pass so that one pass holds about ``token_budget`` tokens
    (sizing by tokens rather than examples keeps the balance for short and long texts alike)."""
    return max(1, token_budget // max(1, sequence_length))


def integrated_gradients(
    model,
    tokenizer,
    texts: list[str],
    labels: list[int],
    *,
    max_length: int,
    n_steps: int,
    internal_batch_size: int | None = None,
    token_budget: int | None = None,
) -> list[TokenAttribution]:
    """Attribute each text's predicted class to its tokens (summed over the embedding dimension)."""
    model.eval()
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    enc = enc.to(model_device(model))
    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    budget = token_budget or token_budget_for(input_ids.device)
    chunk = internal_batch_size or internal_batch(budget, input_ids.shape[1])
    if chunk < len(texts):
        # Captum lifts internal_batch_size to the number of texts (64 e-mails of 128 tokens made
        # passes of 8,192 tokens): fewer texts a call keep each pass within the budget.
        return [
            item
            for start in range(0, len(texts), chunk)
            for item in integrated_gradients(
                model,
                tokenizer,
                texts[start : start + chunk],
                labels[start : start + chunk],
                max_length=max_length,
                n_steps=n_steps,
                internal_batch_size=chunk,
                token_budget=budget,
            )
        ]
    full_lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
    predicted = probs.argmax(-1)
    baseline = pad_baseline(input_ids, tokenizer)

    def forward(embeddings, attention_mask):
        return torch.softmax(model(inputs_embeds=embeddings, attention_mask=attention_mask).logits.float(), dim=-1)

    # IG on the word embeddings, computed here rather than by Captum's LayerIntegratedGradients:
    # that one runs two extra full forward passes per call to capture the layer's input and
    # baseline, and two more for the convergence delta; here the delta needs one (the baseline's).
    embed = model.get_input_embeddings()
    with torch.no_grad():
        inputs, baselines = embed(input_ids), embed(baseline)
        rows = torch.arange(len(texts), device=input_ids.device)
        gap = probs[rows, predicted] - forward(baselines, mask)[rows, predicted]
    ig = IntegratedGradients(forward)
    while True:
        try:
            attributions = ig.attribute(
                inputs,
                baselines=baselines,
                target=predicted,
                additional_forward_args=(mask,),
                n_steps=n_steps,
                internal_batch_size=chunk,
            )
            break
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if "out of memory" not in str(err).lower() or chunk == 1:
                raise
            chunk //= 2  # halve and retry: a GPU shared with training may have less room than planned
            log.warning("integrated gradients: out of memory, retrying with %d examples per pass", chunk)
            if chunk < len(texts):  # fewer examples a pass than texts: split the texts (above)
                return integrated_gradients(
                    model,
                    tokenizer,
                    texts,
                    labels,
                    max_length=max_length,
                    n_steps=n_steps,
                    internal_batch_size=chunk,
                    token_budget=budget,
                )
    delta = attributions.sum(dim=(1, 2)).detach() - gap  # completeness: sum of attributions = f(x) - f(baseline)
    scores = (attributions.sum(-1) * mask).detach().cpu()
    delta, probs, predicted, input_ids, mask = delta.cpu(), probs.cpu(), predicted.cpu(), input_ids.cpu(), mask.cpu()
    results = []
    for i, text in enumerate(texts):
        n = int(mask[i].sum())
        tokens = tokenizer.convert_ids_to_tokens(input_ids[i, :n].tolist())
        results.append(
            TokenAttribution(
                text=text,
                tokens=tokens,
                scores=[float(s) for s in scores[i, :n]],
                predicted=int(predicted[i]),
                probability=float(probs[i, predicted[i]]),
                label=int(labels[i]),
                delta=float(delta[i]),
                truncated=full_lengths[i] > max_length,
            )
        )
    return results
