"""Answers scored after prompts, teacher-forced, for decoder-only and encoder–decoder models alike.

A decoder-only model (Llama, GPT) reads the prompt and the answer as one sequence: answer token
``k`` is predicted at position ``len(prompt) - 1 + k``. An encoder–decoder model (T5, BART) reads
the prompt in its encoder and the answer in its decoder, shifted right behind the decoder's start
token: answer token ``k`` is predicted at decoder position ``k``. :func:`layout` writes both as
one sequence of ids — the prompt, then what the decoder reads (nothing more for a decoder-only
model) — of the same length, so that the callers (scoring, integrated gradients on the
embeddings, word ablation, faithfulness) batch, cut and attribute positions the same way whatever
the architecture; :func:`logits` splits the sequence where the model needs it split.

Plain torch only: the served model (``serving_generation``) ships this file beside ``answers.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch


def is_encoder_decoder(model) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def start_id(model) -> int:
    """The token an encoder–decoder model's decoder starts from (T5: its pad token)."""
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        raise ValueError(f"{type(model).__name__}: its config names no decoder_start_token_id")
    return int(start)


def layout(model, prompt: Sequence[int], answer: Sequence[int]) -> tuple[list[int], list[int]]:
    """The ids of one sequence and the positions in it whose logits predict ``answer``'s tokens:
    ``prompt + answer`` for a decoder-only model (token ``k`` at ``len(prompt) - 1 + k``);
    ``prompt + [start] + answer[:-1]`` for an encoder–decoder one (token ``k`` at
    ``len(prompt) + k``). Both are ``len(prompt) + len(answer)`` long."""
    n = len(prompt)
    if is_encoder_decoder(model):
        return [*prompt, start_id(model), *answer[:-1]], [n + k for k in range(len(answer))]
    return [*prompt, *answer], [n - 1 + k for k in range(len(answer))]


def logits(
    model,
    n_prompt: int,
    keep: torch.Tensor,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[batch, len(keep), vocab]``: the logits at positions ``keep`` of :func:`layout`'s sequences
    (ids or embeddings), every row's prompt ``n_prompt`` long. Over a vocabulary of 49,152 the head
    over every position costs a fifth of SmolLM2's forward pass: models with ``logits_to_keep``
    compute only the kept ones, the others are sliced."""
    if is_encoder_decoder(model):
        parts: dict[str, torch.Tensor] = {}
        if input_ids is not None:
            parts |= {"input_ids": input_ids[:, :n_prompt], "decoder_input_ids": input_ids[:, n_prompt:]}
        if inputs_embeds is not None:
            parts |= {
                "inputs_embeds": inputs_embeds[:, :n_prompt],
                "decoder_inputs_embeds": inputs_embeds[:, n_prompt:],
            }
        if attention_mask is not None:
            parts |= {
                "attention_mask": attention_mask[:, :n_prompt],
                "decoder_attention_mask": attention_mask[:, n_prompt:],
            }
        return model(**parts).logits[:, keep - n_prompt]
    inputs = {"input_ids": input_ids, "inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return model(**inputs, logits_to_keep=keep).logits
    return model(**inputs).logits[:, keep]


def _padded(seqs: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (pad id 0: masked, so any id does) and their mask."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)], mask[r, : len(seq)] = torch.tensor(seq, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def continuation_logprobs(
    model, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], rows: Callable[[int], int]
) -> list[np.ndarray]:
    """Teacher-forced log-probability of each token of ``answers[i]`` after ``prompts[i]``, for pairs
    of any lengths, the model as it is (the caller sets eval mode). Sorted by length and
    right-padded (a decoder position sees only what comes before it, an encoder ignores the masked
    pads), ``rows(width)`` pairs a pass."""
    device = next(model.parameters()).device
    seq2seq = is_encoder_decoder(model)
    order = np.argsort([len(p) + len(a) for p, a in zip(prompts, answers, strict=True)], kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(prompts)
    start = 0
    while start < len(order):
        first = order[start]
        chunk = order[start : start + max(1, rows(len(prompts[first]) + len(answers[first])))]
        if seq2seq:
            enc, enc_mask = _padded([list(prompts[i]) for i in chunk], device)
            dec, dec_mask = _padded([[start_id(model), *answers[i][:-1]] for i in chunk], device)
            found = model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec,
                          decoder_attention_mask=dec_mask).logits  # fmt: skip
            where = {i: list(range(len(answers[i]))) for i in chunk}
        else:
            ids, mask = _padded([list(prompts[i]) + list(answers[i]) for i in chunk], device)
            # Row r's answer token k is predicted at position len(prompt) - 1 + k.
            keep = sorted({len(prompts[i]) - 1 + k for i in chunk for k in range(len(answers[i]))})
            column = {p: c for c, p in enumerate(keep)}
            found = logits(model, 0, torch.tensor(keep, device=device), input_ids=ids, attention_mask=mask)
            where = {i: [column[len(prompts[i]) - 1 + k] for k in range(len(answers[i]))] for i in chunk}
        logp = torch.log_softmax(found.float(), dim=-1).cpu()
        for r, i in enumerate(chunk):
            out[i] = logp[r, where[i], list(answers[i])].double().numpy()
        start += len(chunk)
    return out
