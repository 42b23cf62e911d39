"""Numbers that describe a text, for drift tests: column statistics say little about free text.

``oov_share`` is measured against the *model's* vocabulary: the share of words its tokenizer
does not know whole (split into pieces, or mapped to the unknown token). New slang, hashtags,
handles and misspellings raise it, and it is exactly where a fine-tuned model is least sure.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

DESCRIPTORS = ("length_chars", "length_words", "oov_share", "nonletter_share")
_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter
_SPACE = re.compile(r"\s")


def text_descriptors(texts: list[str], tokenizer) -> pd.DataFrame:
    """One row per text: length in characters and words, out-of-vocabulary word share, and the
    share of non-space characters that are not letters (digits, punctuation, emoji, ``#@/``)."""
    known = _whole_word_lookup(tokenizer)
    pre_tokenize = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    normalize = tokenizer.backend_tokenizer.normalizer
    rows = np.zeros((len(texts), len(DESCRIPTORS)), dtype=np.float64)
    for i, text in enumerate(texts):
        words = [w for w, _ in pre_tokenize(normalize.normalize_str(text) if normalize else text)]
        visible = len(text) - len(_SPACE.findall(text))
        rows[i] = (
            len(text),
            len(text.split()),
            sum(w not in known for w in words) / len(words) if words else 0.0,
            (visible - len(_LETTER.findall(text))) / visible if visible else 0.0,
        )
    return pd.DataFrame(rows, columns=list(DESCRIPTORS))


def _whole_word_lookup(tokenizer) -> set[str]:
    """Vocabulary entries that stand for a whole word (not a ``##`` continuation piece)."""
    unknown = tokenizer.unk_token
    return {token for token in tokenizer.get_vocab() if not token.startswith("##") and token != unknown}
