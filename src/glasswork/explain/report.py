"""A self-contained HTML page of token attributions: no scripts, no network, no CDN.

One block per probe text: the prediction, then one line of coloured tokens per method, so
the methods can be compared side by side.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from glasswork.explain.attributions import TokenAttribution

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;max-width:72rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.4rem} .meta{color:#555;font-size:.9rem;margin:.2rem 0 .4rem}
.item{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:.8rem 0}
.ok{color:#1a7f37} .bad{color:#cf222e} .tok{padding:1px 2px;border-radius:3px;line-height:1.9}
.method{color:#555;font-size:.8rem;display:inline-block;width:11rem}
.legend span{padding:2px 6px;border-radius:3px;margin-right:.4rem} .note{color:#9a6700}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left;vertical-align:top}
"""
SKIP = {"[CLS]", "[SEP]", "[PAD]"}


def render(
    explained: Mapping[str, Sequence[TokenAttribution]],
    names: Sequence[str],
    title: str,
    summary: dict[str, str],
    figures: Mapping[str, str] | None = None,
) -> str:
    """The page: a summary table, inlined figures, a legend, then one block per text with every
    method's tokens."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    legend = (
        '<p class="legend"><span style="background:rgba(26,127,55,.55)">supports the prediction</span>'
        '<span style="background:rgba(207,34,46,.55)">speaks against it</span> '
        "(attention rollout is unsigned: it shows what the model looked at)</p>"
    )
    shown = "".join(
        f'<h2>{html.escape(caption)}</h2><img alt="{html.escape(caption)}" src="{uri}" style="max-width:100%">'
        for caption, uri in (figures or {}).items()
    )
    methods = list(explained)
    blocks = "".join(
        _block([explained[m][i] for m in methods], methods, names) for i in range(len(explained[methods[0]]))
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>"
        f"{shown}<h2>Probe texts</h2>{legend}{blocks}</body></html>"
    )


def _block(items: Sequence[TokenAttribution], methods: Sequence[str], names: Sequence[str]) -> str:
    first = items[0]
    correct = first.predicted == first.label
    verdict = f'<span class="{"ok" if correct else "bad"}">{"correct" if correct else "wrong"}</span>'
    meta = (
        f"predicted <b>{html.escape(names[first.predicted])}</b> (p={first.probability:.3f}) · "
        f"true <b>{html.escape(names[first.label])}</b> · {verdict}"
    )
    lines = "".join(
        f'<div><span class="method">{html.escape(m.replace("_", " "))}</span>{_tokens(item)}</div>'
        for m, item in zip(methods, items, strict=True)
    )
    note = (
        '<div class="note">Text longer than the model\'s maximum: truncated, only the shown tokens were used.</div>'
        if first.truncated
        else ""
    )
    return f'<div class="item"><div class="meta">{meta}</div>{lines}{note}</div>'


def _tokens(item: TokenAttribution) -> str:
    shown = [(t, s) for t, s in zip(item.tokens, item.scores, strict=True) if t not in SKIP]
    peak = max((abs(s) for _, s in shown), default=0.0) or 1.0
    spans = []
    for token, score in shown:
        alpha = min(1.0, abs(score) / peak) * 0.75
        colour = "26,127,55" if score >= 0 else "207,34,46"
        text = token[2:] if token.startswith("##") else " " + token
        spans.append(
            f'<span class="tok" title="{score:+.4f}" style="background:rgba({colour},{alpha:.3f})">'
            f"{html.escape(text)}</span>"
        )
    return "".join(spans)


def quality_rows(methods: Sequence[str], metrics: Mapping[str, float], max_spearman: float) -> str:
    """One table row per method for the image and table pages: comprehensiveness and sufficiency
    AOPC (random orders in brackets) and the randomisation check's mean Spearman and verdict."""

    def aopc(method: str, name: str) -> str:
        return f"{metrics[f'{method}/{name}_aopc']:.3f} ({metrics[f'{method}/random_{name}_aopc']:.3f})"

    rows = []
    for method in methods:
        rand = metrics.get(f"{method}/randomisation_spearman_mean")
        verdict = "passed" if rand is not None and rand < max_spearman else "FAILED"
        checked = "not checked" if rand is None else f"{rand:.2f}, {verdict}"
        cells = (method, aopc(method, "comprehensiveness"), aopc(method, "sufficiency"), checked)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(rows)


def figure_sections(figures: Mapping[str, bytes | None]) -> str:
    """Each figure under its (escaped) title, inlined as a PNG data URI; ``None`` ones left out."""
    from glasswork.explain.embeddings import data_uri

    return "".join(
        f"<h2>{html.escape(title)}</h2><img src='{data_uri(png)}' alt='{html.escape(title)}'>"
        for title, png in figures.items()
        if png is not None
    )
