"""Explanations of a causal language model's answer, token by token, over plain token ids.

Every answer token ``j`` is scored by its teacher-forced log-probability
``f_j = log p(answer_j | prompt, answer_<j)``. Integrated gradients (Sundararajan et al., 2017,
https://arxiv.org/abs/1703.01365) attribute each ``f_j`` to the input embeddings of every earlier
position, batched: the causal mask lets one forward pass over the whole sequence give every
position's logits, so the interpolation steps and the answer's targets are rows of the same
passes (one row per target and step; summing the rows' targets and taking one gradient gives each
row its own target's gradient) instead of one attribution call per generated token, as Captum's
``LLMGradientAttribution`` makes. Word ablation, contrastive integrated gradients (why answer A
rather than B) and the attention complete the set; how faithful they are is measured in
:mod:`glasswork.explain.generation_quality`. No tokenizer is needed: the caller passes ids (and token
strings where words matter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from glasswork.errors import DataError
from glasswork.explain.attributions import internal_batch, model_device, token_budget_for
from glasswork.models import teacher_forcing as forcing

WORD_START = ("Ġ", "▁", "Ċ")  # byte-level BPE's space and newline, SentencePiece's space


@dataclass(frozen=True)
class Attribution:
    """Integrated gradients of an answer. ``scores[j, i]``: what input position ``i`` (prompt
    tokens, then the answer's) gave answer token ``j``'s log-probability; 0 from ``i = n_prompt + j``
    on (the model cannot see those). ``residuals[j]``: ``scores[j].sum() - (logprobs[j] -
    baseline_logprobs[j])``, the completeness error, which shrinks as ``n_steps`` grows."""

    scores: np.ndarray  # [n_answer, n_prompt + n_answer - 1]
    residuals: np.ndarray  # [n_answer]
    logprobs: np.ndarray  # [n_answer], f_j at the input
    baseline_logprobs: np.ndarray  # [n_answer], f_j at the baseline


@dataclass(frozen=True)
class Contrast:
    """Why answer A rather than B: integrated gradients of ``log p(A | prompt) - log p(B | prompt)``
    on the prompt's tokens (positive: the token argues for A), the two log-probabilities and the
    completeness error."""

    scores: np.ndarray  # [n_prompt]
    logp_a: float
    logp_b: float
    residual: float


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) for the block, then back in the mode it was in."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _check_ids(prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> None:
    if not len(prompt_ids) or not len(answer_ids):
        raise DataError(
            f"a prompt of {len(prompt_ids)} tokens and an answer of {len(answer_ids)}: "
            "both need at least one token to be explained (drop empty prompts and answers first)"
        )


def _rows_per_pass(model: torch.nn.Module, width: int, batch_size: int | None) -> int:
    """Sequences per forward pass: ``batch_size``, or the house's token budget (about 2,000 tokens
    a pass on a CPU, where bigger passes are slower; a share of free memory on a GPU)."""
    return batch_size or internal_batch(token_budget_for(model_device(model)), width)


def continuation_logprobs(
    model, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], batch_size: int | None = None
) -> list[np.ndarray]:
    """Teacher-forced log-probability of each token of ``answers[i]`` after ``prompts[i]``, for pairs
    of any lengths (:func:`glasswork.models.teacher_forcing.continuation_logprobs`), in passes of
    ``batch_size`` pairs or about the token budget."""
    with _evaluating(model):
        return forcing.continuation_logprobs(
            model, prompts, answers, lambda width: _rows_per_pass(model, width, batch_size)
        )


def answer_logprobs(model, prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> np.ndarray:
    """``[n_answer]``: the teacher-forced log-probability of each answer token given the prompt and
    the answer's tokens before it (one forward pass)."""
    _check_ids(prompt_ids, answer_ids)
    return continuation_logprobs(model, [prompt_ids], [answer_ids])[0]


def _embeddings(model, ids: Sequence[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor([list(ids)], device=model_device(model)))[0]


def baseline_embeddings(model, length: int, baseline: int | None) -> torch.Tensor:
    """``[length, dim]``: zeros (``baseline=None``), or token ``baseline``'s embedding at every position."""
    if baseline is None:
        weight = model.get_input_embeddings().weight
        return torch.zeros((length, weight.shape[1]), dtype=weight.dtype, device=weight.device)
    return _embeddings(model, [baseline] * length)


def _integrate(
    model, x, base, targets, *, n_prompt: int, n_steps: int, method: str, batch_size: int | None
) -> torch.Tensor:
    """``[n_targets, length, dim]``: each target's gradient, integrated along the straight path from
    ``base`` to ``x`` (``[length, dim]``), with ``method``'s nodes and weights (Captum's, so the two
    agree). A target is (positions, tokens): the sum of ``log p(token | everything before)`` at
    those positions of :func:`~glasswork.models.teacher_forcing.layout`'s sequence (the prompt is its
    first ``n_prompt``). Rows, one per target and step, run target by target, each pass only as long
    as its last target needs (the causal mask makes the rest irrelevant)."""
    step_sizes, alphas = approximation_parameters(method)
    weights, nodes = step_sizes(n_steps), alphas(n_steps)
    rows = [(t, s) for t in range(len(targets)) for s in range(n_steps)]
    grads = torch.zeros((len(targets), *x.shape), dtype=torch.float32, device=x.device)
    start = 0
    while start < len(rows):
        width = max(targets[rows[start][0]][0]) + 1
        chunk = rows[start : start + _rows_per_pass(model, width, batch_size)]
        width = max(max(targets[t][0]) for t, _ in chunk) + 1
        alpha = torch.tensor([nodes[s] for _, s in chunk], dtype=x.dtype, device=x.device)[:, None, None]
        path = (base[:width] + alpha * (x[:width] - base[:width])).detach().requires_grad_(True)
        keep = sorted({p for t, _ in chunk for p in targets[t][0]})
        column = {p: c for c, p in enumerate(keep)}
        logits = forcing.logits(model, n_prompt, torch.tensor(keep, device=x.device), inputs_embeds=path)
        logp = torch.log_softmax(logits.float(), dim=-1)
        picks = [(r, column[p], tok) for r, (t, _) in enumerate(chunk) for p, tok in zip(*targets[t], strict=True)]
        r, c, tok = (torch.tensor(v, device=x.device) for v in zip(*picks, strict=True))
        (grad,) = torch.autograd.grad(logp[r, c, tok].sum(), path)
        scale = torch.tensor([weights[s] for _, s in chunk], device=x.device)[:, None, None]
        index = torch.tensor([t for t, _ in chunk], device=x.device)
        grads[:, :width].index_add_(0, index, grad.float() * scale)
        start += len(chunk)
    return grads


def _forward_logprobs(
    model, embeds: torch.Tensor, n_prompt: int, positions: list[int], tokens: list[int]
) -> np.ndarray:
    with torch.inference_mode():
        keep = torch.tensor(positions, device=embeds.device)
        logits = forcing.logits(model, n_prompt, keep, inputs_embeds=embeds[None])
        logp = torch.log_softmax(logits[0].float(), dim=-1)
        return logp[range(len(tokens)), tokens].double().cpu().numpy()


def integrated_gradients(
    model,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    *,
    n_steps: int = 32,
    baseline: int | None = None,
    batch_size: int | None = None,
    attribute_answer: bool = True,
    frame: tuple[int, int] = (0, 0),
    method: str = "gausslegendre",
) -> Attribution:
    """Integrated gradients of each answer token's log-probability on the input embeddings of every
    earlier position (summed over the embedding dimension), ``n_steps`` interpolation steps.

    The baseline (``baseline=None``) is every embedding at zero, prompt and answer alike. In a
    Llama-style decoder (RMSNorm, no biases) zero embeddings stay zero through every block, so the
    model's output there is exactly uniform: the attributions split ``f_j(x) + log(vocab)``, the
    answer's log-probability above no information at all, rather than its difference from some
    token chosen to mean "nothing" (a pad or end-of-text token is still a token the model has read
    before). But RMSNorm makes the output jump within the path's first hundredths, where a few
    dozen steps leave much of ``f_j`` unaccounted for (the residuals say so): the explain step
    takes a token baseline, whose path converges in 8 steps. ``baseline=<token id>`` puts that
    token's embedding at every position instead (Captum's
    ``TextTokenInput`` default is id 0). With ``attribute_answer=False`` the answer's earlier tokens
    keep their embeddings along the whole path (Captum's ``LLMGradientAttribution`` convention): only
    the prompt is attributed and the answer's columns are 0.

    An encoder–decoder model is explained the same way: the prompt's tokens are the encoder's
    inputs, the answer's earlier ones the decoder's (its start token stays at its own embedding and
    is not a column), so ``scores`` has the same columns whatever the architecture.

    ``batch_size``: sequences (target × step rows) per forward pass; by default about 2,000 tokens a
    pass on a CPU.
    """
    _check_ids(prompt_ids, answer_ids)
    n_prompt, seq2seq = len(prompt_ids), forcing.is_encoder_decoder(model)
    with _evaluating(model):
        ids, positions = forcing.layout(model, prompt_ids, answer_ids)
        x = _embeddings(model, ids)
        base = baseline_embeddings(model, len(x), baseline)
        base = _keep_frame(x, base, n_prompt, frame)
        if seq2seq:  # the decoder's start token is no input of the user's: it stays
            base[n_prompt] = x[n_prompt]
        if not attribute_answer:
            base = torch.cat([base[:n_prompt], x[n_prompt:]])
        tokens = list(answer_ids)
        targets = [([p], [t]) for p, t in zip(positions, tokens, strict=True)]
        grads = _integrate(model, x, base, targets, n_prompt=n_prompt, n_steps=n_steps, method=method,
                           batch_size=batch_size)  # fmt: skip
        scores = ((x - base).float()[None] * grads).sum(-1).detach().cpu().double().numpy()
        # Columns: the prompt's tokens, then the answer's but its last (no input to any target); an
        # encoder–decoder's are the decoder's inputs after its start token.
        scores = np.delete(scores, n_prompt, axis=1) if seq2seq else scores[:, :-1]
        logprobs = _forward_logprobs(model, x, n_prompt, positions, tokens)
        at_base = _forward_logprobs(model, base, n_prompt, positions, tokens)
    residuals = scores.sum(axis=1) - (logprobs - at_base)
    return Attribution(scores, residuals, logprobs, at_base)


def _keep_frame(x: torch.Tensor, base: torch.Tensor, n_prompt: int, frame: tuple[int, int]) -> torch.Tensor:
    """The baseline with the prompt's first ``frame[0]`` and last ``frame[1]`` tokens (a chat
    template's head and tail) at their own embeddings: the path moves the user's text only."""
    head, tail = frame
    if head < 0 or tail < 0 or head + tail > n_prompt:
        raise ValueError(f"frame={frame}: expected two counts that fit in a prompt of {n_prompt} tokens")
    base = base.clone()
    base[:head] = x[:head]
    base[n_prompt - tail : n_prompt] = x[n_prompt - tail : n_prompt]
    return base


def contrastive(
    model,
    prompt_ids: Sequence[int],
    answer_a: Sequence[int],
    answer_b: Sequence[int],
    *,
    n_steps: int = 32,
    baseline: int | None = None,
    batch_size: int | None = None,
    frame: tuple[int, int] = (0, 0),
    method: str = "gausslegendre",
) -> Contrast:
    """Integrated gradients of ``log p(A | prompt) - log p(B | prompt)`` (each summed over its
    continuation's tokens, teacher-forced) on the prompt's tokens, the continuations kept as they
    are. The prompt's path is the same for both, so this is each continuation's attribution, one
    target a step (``n_steps`` rows each), minus the other's."""
    _check_ids(prompt_ids, answer_a)
    _check_ids(prompt_ids, answer_b)
    n_prompt = len(prompt_ids)
    parts = []
    with _evaluating(model):
        for answer in (answer_a, answer_b):
            ids, positions = forcing.layout(model, prompt_ids, answer)
            x = _embeddings(model, ids)
            base = torch.cat([baseline_embeddings(model, n_prompt, baseline), x[n_prompt:]])
            base = _keep_frame(x, base, n_prompt, frame)
            target = [(positions, list(answer))]
            grads = _integrate(model, x, base, target, n_prompt=n_prompt, n_steps=n_steps, method=method,
                               batch_size=batch_size)[0]  # fmt: skip
            scores = ((x - base).float() * grads).sum(-1)[:n_prompt].detach().cpu().double().numpy()
            logp = _forward_logprobs(model, x, n_prompt, positions, list(answer)).sum()
            parts.append((scores, logp, _forward_logprobs(model, base, n_prompt, positions, list(answer)).sum()))
    (scores_a, logp_a, base_a), (scores_b, logp_b, base_b) = parts
    scores = scores_a - scores_b
    residual = float(scores.sum() - ((logp_a - logp_b) - (base_a - base_b)))
    return Contrast(scores, float(logp_a), float(logp_b), residual)


def word_groups(tokens: Sequence[str]) -> list[int]:
    """The word index of each token. A byte-level BPE token (GPT-2, Llama 3, SmolLM2) that starts
    with "Ġ" (a space) begins a word, as does SentencePiece's "▁"; a newline ("Ċ") is a word of its
    own and the token after it begins one; so is a special token such as ``<|im_start|>``.
    Punctuation without a space stays with the word before it ("great," is one word)."""
    groups: list[int] = []
    previous = ""
    for i, token in enumerate(tokens):
        special = token.startswith("<|") and token.endswith("|>")
        was_special = previous.startswith("<|") and previous.endswith("|>")
        starts = i == 0 or token.startswith(WORD_START) or special or was_special or previous.endswith("Ċ")
        groups.append(groups[-1] + 1 if groups and starts else groups[-1] if groups else 0)
        previous = token
    return groups


def feature_ablation(
    model,
    prompt_ids: Sequence[int],
    answer_ids: Sequence[int],
    groups: Sequence[int],
    *,
    neutral_id: int,
    batch_size: int | None = None,
) -> np.ndarray:
    """``[n_answer, n_prompt]``: how far each answer token's teacher-forced log-probability falls
    when the word of each prompt token is ablated, every token of the word replaced by
    ``neutral_id`` (each token of a word carries the word's score). ``groups[i]``: the word index
    of prompt token ``i`` (:func:`word_groups`); a negative index leaves the token alone (a chat
    template's frame) and scores it 0. One pass for every word (same lengths, no padding)."""
    _check_ids(prompt_ids, answer_ids)
    if len(groups) != len(prompt_ids):
        raise DataError(f"{len(groups)} word indices for a prompt of {len(prompt_ids)} tokens: expected one a token")
    words = sorted({g for g in groups if g >= 0})
    variants = [[neutral_id if g == w else t for t, g in zip(prompt_ids, groups, strict=True)] for w in words]
    lps = continuation_logprobs(model, [prompt_ids, *variants], [answer_ids] * (len(words) + 1), batch_size)
    fall = {w: lps[0] - lp for w, lp in zip(words, lps[1:], strict=True)}
    zero = np.zeros(len(answer_ids))
    return np.stack([fall.get(g, zero) for g in groups], axis=1)


def attention(
    model, prompt_ids: Sequence[int], answer_ids: Sequence[int], layers: str = "last"
) -> tuple[np.ndarray | None, str]:
    """``[n_answer, n_prompt]``: how much each answer token's position attends to each prompt token,
    averaged over heads, in the last layer (``layers="last"``) or averaged over all layers
    (``"all"``): a decoder-only model's self-attention at the positions that predict the answer, an
    encoder–decoder's cross-attention (the decoder's reading of the encoded prompt). With a note
    saying what it is, or ``None`` and why not. SDPA and flash kernels return no weights: the model
    is switched to eager attention for the call, then back."""
    if layers not in ("last", "all"):
        raise ValueError(f"layers={layers!r}: expected 'last' or 'all'")
    _check_ids(prompt_ids, answer_ids)
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    n_prompt, seq2seq = len(prompt_ids), forcing.is_encoder_decoder(model)
    ids, positions = forcing.layout(model, prompt_ids, answer_ids)
    try:
        with _evaluating(model), torch.inference_mode():
            if before not in (None, "eager") and hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("eager")
            input_ids = torch.tensor([ids], device=model_device(model))
            if seq2seq:
                out = model(input_ids=input_ids[:, :n_prompt], decoder_input_ids=input_ids[:, n_prompt:],
                            output_attentions=True)  # fmt: skip
                found, rows = out.cross_attentions, [p - n_prompt for p in positions]
            else:
                found, rows = model(input_ids=input_ids, output_attentions=True).attentions, positions
    except (TypeError, ValueError) as err:
        return None, f"{type(model).__name__} does not return attention weights: {err}"
    finally:
        if before is not None and getattr(config, "_attn_implementation", None) != before:
            model.set_attn_implementation(before)
    if not found or any(a is None for a in found):
        return None, f"{type(model).__name__} returned no attention weights, even with eager attention"
    stack = torch.stack([a[0].float().mean(0) for a in (found[-1:] if layers == "last" else found)])
    note = "last layer" if layers == "last" else f"mean of {len(found)} layers"
    kind = "cross-attention" if seq2seq else "self-attention"
    return stack.mean(0)[rows, :n_prompt].cpu().double().numpy(), f"{kind}, {note}, mean over heads"
