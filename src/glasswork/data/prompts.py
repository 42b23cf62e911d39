"""Prompt/response pairs: the shipped reviews as questions, a user's pairs read and checked, and one
pair encoded as a causal LM is trained on it (the loss on the response's tokens only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from glasswork.data import schema, sources
from glasswork.errors import DataError
from glasswork.models.answers import end_ids, fit_prompt

QUESTION = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\nReview: {text}"
SENTIMENT = {0: "negative", 1: "positive"}


def instruction_set(reviews: pd.DataFrame) -> pd.DataFrame:
    """Reviews (``text``, ``label`` 0/1) as questions whose answer is the sentiment word."""
    return pd.DataFrame(
        {
            "prompt": [QUESTION.format(text=t) for t in reviews["text"]],
            "response": reviews["label"].map(SENTIMENT).to_numpy(),
        }
    )


def read_pairs(
    path: Path | str,
    *,
    format: str | None,
    prompt_column: str,
    response_column: str,
    encoding: str = "utf-8",
    slice_columns: list[str] | tuple[str, ...] = (),
) -> schema.CleanTable:
    """A user's CSV, Parquet or JSONL pairs, checked as a labelled text table is (the response is
    the label: no missing or blank one, duplicates and prompts seen with two responses dropped, a
    few rows of each answer). Returns ``prompt``, ``response`` (trimmed text) and the slice columns.

    Raises:
        DataError: naming the file and the column, row or rule that failed.
    """
    path = Path(path)
    frame = sources.read_table(path, format, encoding=encoding)
    header = [str(c) for c in frame.attrs.get("header", frame.columns)]
    for role, column in (("prompt", prompt_column), ("response", response_column)):
        if column not in header:
            raise DataError(
                f"{path} has no {role} column {column!r} (columns found: {', '.join(header) or 'none'}); "
                f"set data.{role}_column to one of them"
            )
    # A blank response is a missing one (JSONL keeps "" where CSV reads nothing): refused by row.
    responses = frame[response_column].astype("string").str.strip()
    frame[response_column] = responses.mask(responses == "")
    clean = schema.validate(frame, str(path), prompt_column, response_column, list(slice_columns))
    table = clean.frame.rename(columns={"text": "prompt", "label": "response"})
    table["prompt"] = table["prompt"].astype(object)
    table["response"] = table["response"].astype(str)
    return schema.CleanTable(table, [str(c) for c in clean.classes], clean.report)


def encode(tokenizer, prompt: str, response: str, max_length: int, truncation: str) -> dict[str, list[int]]:
    """One pair as the model trains on it: the prompt in the chat template, the response and the
    end of turn; ``labels`` is -100 on the prompt (no loss there). A pair longer than ``max_length``
    loses words from the start of the prompt (``truncation=left``, as the served model cuts it) or
    is refused (``error``)."""
    answer = tokenizer(response, add_special_tokens=False)["input_ids"] + end_ids(tokenizer)
    room = max_length - len(answer)
    if room < 1:
        raise DataError(
            f"the response {response[:40]!r} alone takes {len(answer)} tokens, model.max_length={max_length}: "
            "raise model.max_length"
        )
    full = fit_prompt(tokenizer, prompt, None)
    if len(full) > room and truncation == "error":
        raise DataError(
            f"the prompt {prompt[:50]!r}... and its response take {len(full) + len(answer)} tokens, more than "
            f"model.max_length={max_length}: set data.truncation=left (drop the prompt's start) "
            "or raise model.max_length"
        )
    try:
        ids = full if len(full) <= room else fit_prompt(tokenizer, prompt, room)
    except ValueError as err:
        raise DataError(f"model.max_length={max_length}: {err}") from None
    return {"input_ids": ids + answer, "labels": [-100] * len(ids) + answer}
