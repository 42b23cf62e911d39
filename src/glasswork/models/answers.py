"""A generative language model (decoder-only or encoder–decoder) asked questions whose answers
come from a known set.

Where the responses of a prompt/response table are a handful of answers (the default: a review's
sentiment, ``positive`` or ``negative``), a generative model is also a classifier: the probability
of each answer is the model's probability of that answer's tokens after the prompt (teacher-forced,
the end-of-turn token included, so ``positive`` does not also score ``positively``), normalised over
the answers. That view lets the shared steps score, slice, calibrate, gate and compare a
generative model like any classifier; :meth:`AnswerModel.generate` is the free answer it would
give, whose accuracy and invalid-answer rate the evaluate step reports beside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

try:  # inside Glasswork
    from glasswork.models import teacher_forcing as forcing
except ImportError:  # a loaded model: teacher_forcing.py is beside this file (code_paths)
    import teacher_forcing as forcing  # type: ignore[no-redef]


def prompt_text(tokenizer, prompt: str) -> str:
    """The prompt as the model saw it in training: one user turn, then the assistant's turn opened."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def fit_prompt(tokenizer, prompt: str, room: int | None) -> list[int]:
    """The prompt's ids in the chat template, at most ``room`` of them: words dropped from the start
    of the user's text (the template's head, a system line, stays) until it fits."""
    ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    if room is None or len(ids) <= room:
        return ids
    user = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    over = len(ids) - room
    while over <= len(user):
        # Decoding a tail and encoding it again may merge differently at the cut: check, and cut more.
        ids = tokenizer(prompt_text(tokenizer, tokenizer.decode(user[over:])), add_special_tokens=False)["input_ids"]
        if len(ids) <= room:
            return ids
        over += max(1, len(ids) - room)
    raise ValueError(f"the chat template alone takes more than the {room} tokens left for a prompt")


def end_ids(tokenizer) -> list[int]:
    """The token(s) that close an answer: the chat template's end of turn where it has one, else EOS."""
    marker = getattr(tokenizer, "eos_token", None)
    ids = tokenizer.convert_tokens_to_ids([marker]) if marker else []
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def normalise(answer: str) -> str:
    """How a generated answer is compared with the answer set: its first word, lower-cased, without
    punctuation ("Positive." and "positive" are the same answer; "The review is positive" is not)."""
    words = re.findall(r"[\w'-]+", answer.lower())
    return words[0] if words else ""


class AnswerModel:
    """A causal LM, its tokenizer and the answer set (``classes``: the responses as prepare saw them)."""

    def __init__(
        self,
        model,
        tokenizer,
        classes: Sequence[str],
        max_new_tokens: int = 8,
        max_length: int | None = None,
        device: str = "cpu",
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.classes = [str(c) for c in classes]
        self.max_new_tokens = int(max_new_tokens)
        self.max_length = max_length
        self.device = device
        self.end = end_ids(tokenizer)
        self.answer_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + self.end for c in self.classes]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.end or [0])[0]
        self.seq2seq = forcing.is_encoder_decoder(model)

    @classmethod
    def load(
        cls,
        folder: Path | str,
        classes: Sequence[str],
        max_new_tokens: int = 8,
        max_length: int | None = None,
        device: str = "cpu",
    ):
        """A model that :func:`glasswork.models.causal_lm.save` wrote (a plain Hugging Face folder)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        seq2seq = AutoConfig.from_pretrained(str(folder)).is_encoder_decoder
        loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = loader.from_pretrained(str(folder), dtype=torch.float32)
        return cls(model, tokenizer, classes, max_new_tokens, max_length, device)

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt in the chat template, its start cut where prompt and the longest answer would
        pass ``max_length`` (as training cut it: ``data.truncation=left``)."""
        room = None
        if self.max_length is not None:
            room = self.max_length - max((len(a) for a in self.answer_ids), default=0)
        return [fit_prompt(self.tokenizer, p, room) for p in prompts]

    def continuation_logprobs(self, prompts: list[list[int]], answers: list[list[int]], batch_size: int) -> np.ndarray:
        """Teacher-forced log-probability of each ``answers[i]`` after ``prompts[i]`` (summed over its tokens)."""
        found = forcing.continuation_logprobs(self.model, prompts, answers, lambda width: batch_size)
        return np.array([lp.sum() for lp in found], dtype=np.float64)

    def answer_logprobs(self, prompts: Sequence[str], batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """``[n, k]``: log-probability of each answer of the set after each prompt."""
        ids = self.prompt_ids(prompts)
        k = len(self.classes)
        pairs_p = [p for p in ids for _ in range(k)]
        pairs_a = [self.answer_ids[j] for _ in ids for j in range(k)]
        return self.continuation_logprobs(pairs_p, pairs_a, batch_size).reshape(len(ids), k)

    def predict_proba(self, frame, batch_size: int, progress: bool = False) -> np.ndarray:
        """The answers' probabilities normalised over the set (softmax of their log-probabilities)."""
        scores = self.answer_logprobs(frame["prompt"].tolist(), batch_size)
        scores = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(scores)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], batch_size: int = 16, states: bool = False) -> list[dict]:
        """Greedy answers (reproducible): the text, its tokens' ids and each token's probability;
        with ``states``, also the prompt's mean last hidden state (``prompt_state``: how the model
        represents the prompt before it answers, from the same forward pass)."""
        results: list[dict] = []
        tok = self.tokenizer
        for start in range(0, len(prompts), batch_size):
            ids = self.prompt_ids(prompts[start : start + batch_size])
            width = max(len(s) for s in ids)
            # Left padding for a decoder: every prompt ends where its answer starts. An encoder reads
            # the prompt whole and its decoder starts apart: right padding keeps its positions.
            batch = torch.full((len(ids), width), self.pad, dtype=torch.long)
            mask = torch.zeros_like(batch)
            for row, seq in enumerate(ids):
                cols = slice(0, len(seq)) if self.seq2seq else slice(width - len(seq), width)
                batch[row, cols] = torch.tensor(seq)
                mask[row, cols] = 1
            out = self.model.generate(
                input_ids=batch.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad,
                eos_token_id=self.end or None,
                output_scores=True,
                output_hidden_states=states,
                return_dict_in_generate=True,
            )
            # A decoder's sequences go on from the prompt; an encoder–decoder's from its start token.
            new = out.sequences[:, 1 if self.seq2seq else width :].cpu()
            if states:  # the prompt's pass: its last layer's states, the pads left out
                last = (out.encoder_hidden_states if self.seq2seq else out.hidden_states[0])[-1].float()
                weights = mask.to(last.device).unsqueeze(-1).float()
                pooled = ((last * weights).sum(1) / weights.sum(1)).cpu().numpy()
            steps = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], dim=1).cpu()
            for row in range(len(ids)):
                tokens = new[row].tolist()
                cut = next((j for j, t in enumerate(tokens) if t in self.end or t == self.pad), len(tokens))
                kept = tokens[:cut]
                logps = [float(steps[row, j, t]) for j, t in enumerate(kept)]
                text = tok.decode(kept, skip_special_tokens=True)
                finished = cut < len(tokens)
                # The end of turn's own log-probability: how sure the model was to stop there (an
                # empty answer has no other token to be sure of).
                end = float(steps[row, cut, tokens[cut]]) if finished and cut < steps.shape[1] else None
                results.append(
                    {"response": text, "ids": kept, "token_logprobs": logps, "finished": finished, "end_logprob": end}
                )
                if states:
                    results[-1]["prompt_state"] = pooled[row]
        return results


def answer_metrics(generated: list[dict], truth: Sequence[str], classes: Sequence[str]) -> dict[str, float]:
    """Free answers scored against the reference answers: accuracy, the share that is no answer of
    the set (invalid), mean length in tokens, and the mean log-probability a token of its own
    answers had (the model's confidence in what it said)."""
    answers = [normalise(g["response"]) for g in generated]
    valid = {normalise(c) for c in classes}
    right = [a == normalise(t) for a, t in zip(answers, truth, strict=True)]
    n_tokens = [len(g["ids"]) for g in generated]
    logps = [lp for g in generated for lp in g["token_logprobs"]]
    return {
        "answer_accuracy": float(np.mean(right)) if right else math.nan,
        "invalid_answer_rate": float(np.mean([a not in valid for a in answers])) if answers else math.nan,
        "response_tokens": float(np.mean(n_tokens)) if n_tokens else math.nan,
        "own_answer_logprob": float(np.mean(logps)) if logps else math.nan,
    }


def reference_nll(model: AnswerModel, prompts: Sequence[str], responses: Sequence[str], batch_size: int) -> dict:
    """Mean negative log-likelihood a token of the reference responses has (and its perplexity)."""
    ids = model.prompt_ids(prompts)
    answers = [model.tokenizer(r, add_special_tokens=False)["input_ids"] + model.end for r in responses]
    total = -model.continuation_logprobs(ids, answers, batch_size)
    n = sum(len(a) for a in answers)
    nll = float(total.sum() / max(n, 1))
    return {"reference_nll": nll, "reference_perplexity": float(math.exp(min(nll, 50.0)))}
