"""The data card ``prepare`` prints and writes: what was read, what was dropped and why, the
class balance, token lengths, the ``max_length`` the model will use, and warnings.

The token lengths decide ``model.max_length=auto``: the length that covers
``model.length_quantile`` of the training texts (95%), rounded up to a multiple of 8 and capped at
the model's limit. Short reviews get 64 tokens instead of a fixed 128 (faster, nothing lost);
e-mails get the model's 512 instead of being cut at 128.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SMALL_CLASS = 20  # fewer training rows than this in a class: warned
IMBALANCE = 20.0  # largest class over smallest at or above this: warned
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def token_lengths(tokenizer, texts: list[str], chunk: int = 4096) -> np.ndarray:
    """Tokens per text, special tokens included, nothing cut."""
    counts: list[int] = []
    for i in range(0, len(texts), chunk):
        ids = tokenizer(texts[i : i + chunk], truncation=False, verbose=False)["input_ids"]
        counts.extend(len(x) for x in ids)
    return np.asarray(counts, dtype=np.int64)


def model_limit(tokenizer, positions: int | None) -> int:
    """The longest input the model takes: its position embeddings, or its tokenizer's limit
    (tokenizers that do not know it report a huge sentinel)."""
    limits = [n for n in (positions, tokenizer.model_max_length) if n and n < 100_000]
    return min(limits) if limits else 512


def choose_max_length(lengths: np.ndarray, quantile: float, limit: int) -> int:
    """The ``quantile`` of ``lengths`` rounded up to a multiple of 8, within 16..``limit``."""
    wanted = int(np.ceil(np.quantile(lengths, quantile) / 8) * 8) if len(lengths) else limit
    return int(min(limit, max(16, wanted)))


def card(
    report: dict,
    splits: dict[str, pd.DataFrame],
    names: list[str],
    lengths: np.ndarray | None = None,
    lengths_info: dict | None = None,
) -> dict:
    """The card as a dict: the table's report, class balance per split, warnings, and for texts
    their token ``lengths`` and the ``max_length`` they decide (``lengths_info``)."""
    balance = {
        split: {names[int(k)]: int(v) for k, v in frame["label"].value_counts().sort_index().items()}
        for split, frame in splits.items()
    }
    card = {
        "rows_read": report["rows_read"],
        "rows_kept": report["rows_kept"],
        "dropped": {k.removeprefix("dropped_"): v for k, v in report.items() if k.startswith("dropped_")},
        "class_balance": balance,
        "split_sizes": {k: len(v) for k, v in splits.items()},
    }
    if lengths is not None and lengths_info is not None:
        card |= {
            "train_tokens": {f"p{int(q * 100)}": int(np.quantile(lengths, q)) for q in QUANTILES}
            | {"max": int(lengths.max(initial=0))},
            **lengths_info,
            "cut_share": float((lengths > lengths_info["max_length"]).mean()) if len(lengths) else 0.0,
        }
    for key in ("image_size", "image_mode", "images_changed", "skipped"):
        if key in report:
            card[key] = report[key]
    card["warnings"] = warnings(card)
    return card


def warnings(card: dict) -> list[str]:
    """What a user should know before training on this table."""
    found = []
    train = card["class_balance"]["train"]
    for name, count in train.items():
        if count < SMALL_CLASS:
            found.append(
                f"class '{name}' has {count} training rows (fewer than {SMALL_CLASS}): its metrics will be noisy"
            )
    ratio = max(train.values()) / max(1, min(train.values()))
    if ratio >= IMBALANCE:
        found.append(
            f"the classes are {ratio:.0f}:1 apart in the training split: trainer.class_weights=auto (the default) "
            "or balanced weighs the loss towards the rare ones"
        )
    if card.get("cut_share", 0) > 0.1:
        found.append(
            f"{card['cut_share']:.0%} of the training texts are longer than max_length={card['max_length']} tokens "
            f"and are cut ({card['truncation']} kept)"
        )
    return found


def markdown(card: dict) -> str:
    """The card as a short Markdown page (``artifacts/prepare/data_card.md``, MLflow)."""
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in card["dropped"].items() if v) or "none"
    lines = [
        "# Data card",
        "",
        f"- rows read: {card['rows_read']}, kept: {card['rows_kept']} (dropped: {dropped})",
        f"- split sizes: {', '.join(f'{k} {v}' for k, v in card['split_sizes'].items())}",
        *(
            f"- classes in {split}: {', '.join(f'{n} {c} ({c / max(1, sum(b.values())):.1%})' for n, c in b.items())}"
            for split, b in card["class_balance"].items()
        ),
    ]
    if "train_tokens" in card:
        tokens = ", ".join(f"{k} {v}" for k, v in card["train_tokens"].items())
        limit = f"; the model takes at most {card['model_limit']}" if "model_limit" in card else ""
        kept = card.get("kept", f"{card['truncation']} kept")
        lines += [
            f"- training tokens per text: {tokens}",
            f"- max_length: {card['max_length']} ({card['max_length_source']}{limit}), "
            f"{card['cut_share']:.1%} of the training texts cut, {kept}",
        ]
    if "image_size" in card:
        changed = ", ".join(f"{v} {k}" for k, v in card["images_changed"].items()) or "none"
        lines.append(
            f"- images: {card['image_size'][1]} x {card['image_size'][0]} {card['image_mode']} (changed: {changed})"
        )
    if card.get("skipped"):
        lines.append(f"- skipped (data.on_bad_image=skip): {len(card['skipped'])}: " + "; ".join(card["skipped"][:5]))
    lines += [f"- WARNING: {w}" for w in card["warnings"]]
    return "\n".join(lines) + "\n"
