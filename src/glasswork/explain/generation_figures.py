"""How a generative model's explanations are drawn: each answer token's attributions over the
prompt as a prompt x answer heatmap (PNG for MLflow, an HTML table for the page), and the
contrastive attribution (why answer A rather than B) as signed bars over the prompt's tokens.
Only the user's text is drawn (``span``): the chat template's tokens are the model's frame."""

from __future__ import annotations

import html
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MAX_COLUMNS = 60  # the prompt's last tokens: where a long prompt's question usually sits


def _byte_chars() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


BYTES = _byte_chars()


def shown(token: str) -> str:
    """A token as read: a byte-level BPE token's bytes decoded ("Ġ" a space, "Â«" a «), a
    SentencePiece token's "▁" a space; a newline drawn as ↵, a bare space as ␣."""
    if token and all(c in BYTES for c in token):
        token = bytes(BYTES[c] for c in token).decode("utf-8", errors="replace")
    text = token.replace("▁", " ").replace("\n", "\u21b5").strip()
    return text or "\u2423"


def _window(tokens: Sequence[str], span: tuple[int, int]) -> tuple[int, int]:
    start, end = span
    return max(start, end - MAX_COLUMNS), end


def heatmap_grid(items: Sequence[tuple[Sequence[str], Sequence[str], np.ndarray, tuple[int, int]]]):
    """One heatmap per probe: rows the answer's tokens, columns the user's prompt tokens (the
    last ``MAX_COLUMNS``), colour the signed attribution, scaled per answer token."""
    # Each panel: its answer's rows, and room below them for the prompt's rotated tokens.
    heights = [1.0 + 0.35 * len(answer) for _, answer, _, _ in items]
    fig, axes = plt.subplots(
        len(items), 1, figsize=(12, 1.4 * len(items) + sum(heights)), squeeze=False, height_ratios=heights
    )
    for ax, (prompt, answer, scores, span) in zip(axes[:, 0], items, strict=True):
        start, end = _window(prompt, span)
        matrix = np.asarray(scores, dtype=float)[:, start:end]
        scale = np.abs(matrix).max(axis=1, keepdims=True)
        matrix = matrix / np.where(scale > 0, scale, 1.0)
        ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(end - start), [shown(t) for t in prompt[start:end]], rotation=90, fontsize=7)
        ax.set_yticks(range(len(answer)), [shown(t) for t in answer], fontsize=8)
        ax.set_ylabel("answer")
    axes[-1, 0].set_xlabel("prompt tokens (red: raised the answer token's log-probability, blue: lowered it)")
    fig.tight_layout()
    return fig


def contrast_figure(items: Sequence[tuple[Sequence[str], dict, tuple[int, int]]]):
    """For each probe, the prompt tokens' contribution to log p(A) - log p(B): positive bars
    pushed towards A, negative towards B."""
    fig, axes = plt.subplots(len(items), 1, figsize=(12, 3.2 * len(items)), squeeze=False)
    for ax, (prompt, contrast, span) in zip(axes[:, 0], items, strict=True):
        start, end = _window(prompt, span)
        values = np.asarray(contrast["scores"], dtype=float)[start:end]
        ax.bar(range(len(values)), values, color=np.where(values >= 0, "#c0392b", "#2c7fb8"))
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(values)), [shown(t) for t in prompt[start:end]], rotation=90, fontsize=7)
        gap = contrast["logp_a"] - contrast["logp_b"]
        ax.set_title(
            f"{contrast['a']!r} rather than {contrast['b']!r}: log p difference {gap:+.2f} nats "
            f"(red towards {contrast['a']!r}, blue towards {contrast['b']!r})",
            fontsize=9,
        )
    fig.tight_layout()
    return fig


def heatmap_html(prompt: Sequence[str], answer: Sequence[str], matrix: np.ndarray) -> str:
    """The heatmap as an HTML table: one row per answer token, each prompt token's cell shaded by
    its attribution (red raised, blue lowered; scaled per row), the value in its tooltip."""
    matrix = np.asarray(matrix, dtype=float)
    head = "".join(f"<th class='tok'>{html.escape(shown(t))}</th>" for t in prompt)
    rows = []
    for i, token in enumerate(answer):
        scale = float(np.abs(matrix[i]).max()) or 1.0
        cells = []
        for value in matrix[i]:
            alpha = min(1.0, abs(value) / scale)
            colour = f"rgba(192,57,43,{alpha:.2f})" if value >= 0 else f"rgba(44,127,184,{alpha:.2f})"
            cells.append(f"<td style='background:{colour}' title='{value:+.4f}'></td>")
        rows.append(f"<tr><th>{html.escape(shown(token))}</th>{''.join(cells)}</tr>")
    return f"<div class='heat'><table class='heatmap'><tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
