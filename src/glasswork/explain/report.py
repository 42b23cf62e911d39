"""A self-contained HTML page of token attributions: no scripts, no network, no CDN."""

from __future__ import annotations

import html
from collections.abc import Sequence

from glasswork.explain.attributions import TokenAttribution

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{font-size:1.4rem} .meta{color:#555;font-size:.9rem;margin:.2rem 0 .6rem}
.item{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:.8rem 0}
.ok{color:#1a7f37} .bad{color:#cf222e} .tok{padding:1px 2px;border-radius:3px;line-height:1.9}
.legend span{padding:2px 6px;border-radius:3px;margin-right:.4rem} .note{color:#9a6700}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left}
"""


def render(items: Sequence[TokenAttribution], names: Sequence[str], title: str, summary: dict[str, str]) -> str:
    """The page: a legend, a summary table, then one block per text with its tokens coloured."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    blocks = "".join(_block(item, names) for item in items)
    legend = (
        '<p class="legend"><span style="background:rgba(26,127,55,.55)">supports the prediction</span>'
        '<span style="background:rgba(207,34,46,.55)">speaks against it</span></p>'
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{legend}{blocks}</body></html>"
    )


def _block(item: TokenAttribution, names: Sequence[str]) -> str:
    peak = max((abs(s) for s in item.scores), default=0.0) or 1.0
    spans = []
    for token, score in zip(item.tokens, item.scores, strict=True):
        if token in ("[CLS]", "[SEP]", "[PAD]"):
            continue
        alpha = min(1.0, abs(score) / peak) * 0.75
        colour = "26,127,55" if score >= 0 else "207,34,46"
        text = token[2:] if token.startswith("##") else " " + token
        spans.append(
            f'<span class="tok" title="{score:+.4f}" style="background:rgba({colour},{alpha:.3f})">'
            f"{html.escape(text)}</span>"
        )
    correct = item.predicted == item.label
    verdict = f'<span class="{"ok" if correct else "bad"}">{"correct" if correct else "wrong"}</span>'
    note = (
        '<div class="note">Text longer than the model\'s maximum: truncated, only the shown tokens were used.</div>'
        if item.truncated
        else ""
    )
    meta = (
        f"predicted <b>{html.escape(names[item.predicted])}</b> (p={item.probability:.3f}) · "
        f"true <b>{html.escape(names[item.label])}</b> · {verdict} · IG delta {item.delta:+.1e}"
    )
    return f'<div class="item"><div class="meta">{meta}</div><div>{"".join(spans)}</div>{note}</div>'
