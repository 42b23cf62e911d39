"""The ``explain`` step for ``task=tabular_classification``: one score per column of each probe row
from every configured method (:mod:`.columns`), how faithful each is (columns set to their
training mean or mode against random orders), the cascading randomisation check, agreement
between methods, the champion contrast, and a global view: the mean |integrated gradients| of
each column over test rows, and how the most important column moves the predicted probabilities."""

from __future__ import annotations

import html
import logging
import time
from itertools import combinations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.prepare import load_labels, load_probe, load_split
from glasswork.errors import ConfigError
from glasswork.explain.budget import check_share, cost
from glasswork.explain.column_drift import reference_view
from glasswork.explain.columns import (
    METHODS,
    ColumnExplainer,
    dependence,
    dependence_values,
    faithfulness_columns,
)
from glasswork.explain.embeddings import data_uri, png_bytes
from glasswork.explain.faithfulness import check_alpha, check_measure, check_sample, faithfulness_figure
from glasswork.explain.pixels import agreement
from glasswork.explain.report import figure_sections, quality_rows
from glasswork.explain.sanity import cascade_figure, check_sanity, randomisation_check
from glasswork.models.backbone import inference_device, model_dir
from glasswork.outputs import atomic_dir, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)

BASELINE = "each column at its training mean (numbers) or most frequent category (categories)"


def check_table_methods(methods, setting: str = "explain.methods", allow_none: bool = False) -> None:
    """Refuse an unknown table method or (unless ``allow_none``) an empty list."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not (methods or allow_none):
        raise ConfigError(f"{setting}={list(methods)}: unknown {unknown}; valid methods for tables: {list(METHODS)}")


def _check_count(setting: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        null = ", or null for all of them" if allow_none else ""
        raise ConfigError(f"explain.{setting}={value!r}: expected a whole number of at least 1{null}")


def check_table_settings(cfg: DictConfig) -> None:
    """The tabular explain step's settings, before anything is read or written."""
    e = cfg.explain
    check_table_methods(e.methods)
    check_table_methods(e.sanity_methods, "explain.sanity_methods", allow_none=True)
    check_measure(e.fractions, e.n_random)
    check_sanity(e.sanity_n_texts, None)
    check_sample(e.faithfulness_max_texts)
    check_share(e.max_share_of_train)
    check_alpha("explain.contrast_alpha", e.contrast_alpha)
    for setting in ("n_steps", "global_n_steps", "shap_samples"):
        _check_count(setting, e[setting])
    _check_count("global_max_texts", e.global_max_texts, allow_none=True)


def explain_tables(cfg: DictConfig) -> dict:
    """Explain the ``explain.n_probe`` probe rows; write ``artifacts/explain/`` (attributions.html,
    attributions.json, faithfulness.png, randomisation.png, global_importance.png and .json,
    dependence.png, contrast.json, metrics.json) and log them to the model's MLflow run."""
    from glasswork.tasks.tabular import TablePredictor

    started = time.perf_counter()
    check_table_settings(cfg)
    e = cfg.explain
    labels = load_labels(cfg)
    names = labels["names"]
    predictor = TablePredictor(model_dir(cfg), device=inference_device(cfg.trainer))
    columns, net = predictor.pre.columns, predictor.net
    explainer = ColumnExplainer(predictor, cfg)
    probe, test = load_probe(cfg), load_split(cfg, "test")
    x = explainer.features(probe, "the probe rows")
    probs = explainer.probs(probe)
    predicted = probs.argmax(1).tolist()
    explained = explainer.explain(net, x, predicted, tuple(e.methods))
    metrics: dict[str, float] = faithfulness_columns(net, x, explainer.fill, explainer.mask, predicted, explained,
                                                     list(e.fractions), n_random=e.n_random, seed=cfg.seed)  # fmt: skip
    for a, b in combinations(explained, 2):
        metrics[f"agreement/{a}_vs_{b}"] = agreement(explained[a], explained[b])
    found, sanity_png = _sanity(explainer, test, cfg)
    metrics |= found
    versus = table_contrast(cfg, explainer, test, labels)
    for k, change in versus.get("global_faithfulness", {}).get("change", {}).items():
        if "difference" in change:
            metrics[f"contrast/global_{k}_change"] = change["difference"]
            metrics[f"contrast/global_{k}_fell"] = int(change["verdict"] == "lower")
    importance, importance_png, dependence_png = _global_view(explainer, test, names, cfg)
    metrics["global_importance/n_rows"] = importance["n_rows"]
    metrics["probe_accuracy"] = float(np.mean(np.asarray(predicted) == probe["label"].to_numpy()))
    quality = faithfulness_figure(metrics, list(explained), list(e.fractions))
    for ax in quality.axes:  # the shared figure speaks of tokens
        ax.set_title(ax.get_title().replace("tokens", "columns"), fontsize=10)
        ax.set_xlabel("% of the columns, ranked by the explanation")
    quality_png = png_bytes(quality)
    figures = {
        "How faithful each explanation is (probe rows; dashed: a random order of columns)": quality_png,
        "Model-randomisation check: layers re-initialised from the top, one more at a time": sanity_png,
        f"Mean |integrated gradients| of each column over {importance['n_rows']} test rows": importance_png,
        f"How {importance['dependence']['column']} moves the predicted probabilities": dependence_png,
    }
    rows = _probe_rows(probe, columns, probs, names)
    page = _page(rows, columns, explained, metrics, figures, cfg)
    metrics |= cost(cfg, started)
    with tracking.step_run(cfg, "explain"), atomic_dir(output(cfg, "explain")) as out:
        (out / "faithfulness.png").write_bytes(quality_png)
        (out / "global_importance.png").write_bytes(importance_png)
        (out / "dependence.png").write_bytes(dependence_png)
        if sanity_png is not None:
            (out / "randomisation.png").write_bytes(sanity_png)
        (out / "attributions.html").write_text(page, encoding="utf-8")
        write_json(
            out / "attributions.json",
            {
                "baseline": BASELINE,
                "explained": "the probability of the predicted class",
                "columns": columns,
                "rows": rows,
                "scores": {m: np.round(v, 6).tolist() for m, v in explained.items()},
            },
        )
        write_json(out / "global_importance.json", importance)
        write_json(out / "contrast.json", {"method": "integrated_gradients", **versus})
        write_json(out / "metrics.json", {"explain": metrics})
        mlflow.log_metrics({f"explain/{k}": v for k, v in metrics.items()})
        mlflow.log_artifacts(str(out), "explain")
    log.info("explain: %s", {k: round(v, 4) for k, v in metrics.items() if "_top" not in k})
    return metrics


def _sanity(explainer: ColumnExplainer, test: pd.DataFrame, cfg: DictConfig) -> tuple[dict[str, float], bytes | None]:
    """The cascading randomisation check of ``explain.sanity_methods`` on ``explain.sanity_n_texts``
    test rows (seeded), each re-explained for the class the trained model predicts."""
    e = cfg.explain
    methods = [m for m in e.methods if m in e.sanity_methods]
    if not methods:
        return {}, None
    sample = test.sample(n=min(len(test), e.sanity_n_texts), random_state=cfg.seed)
    xs = explainer.features(sample, "the test split")
    targets = explainer.probs(sample).argmax(1).tolist()

    def explain_with(model):  # {method: (rows, columns) scores}, as the check compares them
        return explainer.explain(model, xs, targets, tuple(methods))

    found, curves = randomisation_check(
        explainer.predictor.net,
        explain_with,
        agreement,
        seed=cfg.seed,
        max_spearman=e.sanity_max_spearman,
    )
    figure = cascade_figure(curves, len(sample), e.sanity_max_spearman)
    figure.axes[0].set_title(f"Cascading model randomisation ({len(sample)} rows): layers re-initialised from the top",
                             fontsize=10)  # fmt: skip
    return found, png_bytes(figure)


def table_contrast(cfg: DictConfig, explainer: ColumnExplainer, test: pd.DataFrame, labels: dict) -> dict:
    """How faithful integrated gradients are for this model and for the champion on the same test
    rows (``explain.faithfulness_max_texts`` of them, seeded), each model explaining its own
    prediction through its own preprocessing: the paired change of each gain at
    ``explain.contrast_alpha``, which the register step's faithfulness gate reads (as
    :func:`glasswork.explain.image_step.image_contrast` writes it)."""
    from glasswork.explain.contrast import champion_model_dir, paired_faithfulness
    from glasswork.outputs import read_json
    from glasswork.tasks.tabular import TablePredictor

    found = champion_model_dir(cfg, tracking.current_run_id(cfg))
    if found is None:
        return {"status": "no champion to compare with"}
    version, folder = found
    if read_json(folder / "labels.json")["classes"] != labels["classes"]:
        return {"status": f"champion v{version} predicts other classes: not compared"}
    champion = ColumnExplainer(TablePredictor(folder, device=explainer.device), cfg)
    missing = [c for c in champion.predictor.pre.columns if c not in test.columns]
    if missing:
        return {"status": f"champion v{version} reads column(s) {missing} that this data lacks: not compared"}
    e = cfg.explain
    sample = test.sample(n=min(len(test), e.faithfulness_max_texts), random_state=cfg.seed)
    mine, theirs = explainer.gains(sample), champion.gains(sample)
    return {
        "status": f"compared with champion v{version}",
        "champion_version": version,
        "global_faithfulness": paired_faithfulness(mine, theirs, e.contrast_alpha),
    }


def _global_view(explainer: ColumnExplainer, test: pd.DataFrame, names: list[str], cfg: DictConfig) -> tuple:
    """Mean |integrated gradients| per column over ``explain.global_max_texts`` test rows (seeded;
    null: all), and the partial dependence of the predicted probabilities on the top column over
    its training quantiles or categories, on the same rows: the JSON and the two figures."""
    e = cfg.explain
    sample = test.sample(n=min(len(test), e.global_max_texts or len(test)), random_state=cfg.seed)
    x = explainer.features(sample, "the test split")
    predicted = explainer.probs(sample).argmax(1).tolist()
    explained = explainer.explain(explainer.predictor.net, x, predicted, ("integrated_gradients",), e.global_n_steps)
    scores = explained["integrated_gradients"]
    columns = explainer.predictor.pre.columns
    magnitude, signed = np.abs(scores).mean(0), scores.mean(0)
    order = np.argsort(-magnitude, kind="stable")
    top = columns[int(order[0])]
    values = dependence_values(load_split(cfg, "train"), explainer.predictor.pre, top)
    curve = dependence(explainer.probs, sample, top, values)
    importance = {
        "method": "integrated_gradients",
        "baseline": BASELINE,
        "n_rows": len(sample),
        "columns": [
            {"column": columns[i], "mean_abs_attribution": float(magnitude[i]), "mean_attribution": float(signed[i])}
            for i in order
        ],
        "dependence": {
            "column": top,
            "kind": "categorical" if top in explainer.predictor.pre.categorical else "numeric",
            "values": values,
            "classes": names,
            "mean_probability": np.round(curve, 6).tolist(),
        },
    }
    importance |= reference_view(explainer, sample, scores, cfg)  # the drift step's baseline
    return importance, png_bytes(_importance_figure(importance)), png_bytes(_dependence_figure(importance))


def _plain(text, limit: int = 40) -> str:
    """User text for a figure: cut to ``limit`` characters, with no dollar signs for mathtext to read."""
    text = str(text)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _importance_figure(importance: dict) -> plt.Figure:
    entries = importance["columns"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(entries) + 1.2))
    y = np.arange(len(entries))[::-1]
    ax.barh(y, [c["mean_abs_attribution"] for c in entries], color="C0")
    ax.set_yticks(y, [_plain(c["column"]) for c in entries], fontsize=8)
    ax.set_xlabel("mean |integrated gradients| (probability of the predicted class)")
    ax.set_title(f"Column importance over {importance['n_rows']} test rows", fontsize=10)
    fig.tight_layout()
    return fig


def _dependence_figure(importance: dict) -> plt.Figure:
    d = importance["dependence"]
    curve = np.asarray(d["mean_probability"])
    fig, ax = plt.subplots(figsize=(7, 4))
    categorical = d["kind"] == "categorical"
    x = np.arange(len(d["values"])) if categorical else np.asarray(d["values"], dtype=float)
    for k, name in enumerate(d["classes"]):
        ax.plot(x, curve[:, k], "o-", color=f"C{k}", label=_plain(name))
    if categorical:
        ax.set_xticks(x, [_plain(v, 24) for v in d["values"]], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{_plain(d['column'])} ({'its training categories' if categorical else 'its training quantiles'})")
    ax.set_ylabel(f"mean probability over {importance['n_rows']} test rows")
    ax.set_title(f"Partial dependence on the most important column, {_plain(d['column'])}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _shown(value) -> str | float | None:
    """A cell of the user's table as JSON holds it: a number, text, or None for a missing value."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, int | float) else str(value)


def _probe_rows(probe: pd.DataFrame, columns: list[str], probs: np.ndarray, names: list[str]) -> list[dict]:
    rows = []
    for i in range(len(probe)):
        p = int(probs[i].argmax())
        rows.append({
            "values": {c: _shown(probe[c].iloc[i]) for c in columns},
            "actual": names[int(probe["label"].iloc[i])],
            "predicted": names[p],
            "probability": float(probs[i, p]),
        })  # fmt: skip
    return rows


def _row_figure(columns: list[str], explained: dict[str, np.ndarray], i: int) -> bytes:
    """One probe row's scores: a small bar chart per method (red: for the predicted class)."""
    fig, axes = plt.subplots(1, len(explained), figsize=(2.6 * len(explained) + 1, 0.28 * len(columns) + 1),
                             sharey=True, squeeze=False)  # fmt: skip
    y = np.arange(len(columns))[::-1]
    for ax, (method, scores) in zip(axes[0], explained.items(), strict=True):
        row = scores[i]
        ax.barh(y, row, color=np.where(row >= 0, "tab:red", "tab:blue"))
        ax.axvline(0, color="0.5", linewidth=0.6)
        ax.set_title(method.replace("_", " "), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_yticks(y, [_plain(c, 24) for c in columns], fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def _page(rows, columns, explained, metrics, figures, cfg) -> str:
    """The HTML page: the figures, a table per method and one section per probe row; every name
    and value from the data is escaped."""
    e = cfg.explain

    def cell(value, tag: str = "td") -> str:
        return f"<{tag}>{html.escape(str(value))}</{tag}>"

    summary, pictures = quality_rows(explained, metrics, e.sanity_max_spearman), figure_sections(figures)
    sections = []
    header = "<tr>" + cell("column", "th") + cell("value", "th") + "".join(cell(m, "th") for m in explained) + "</tr>"
    for i, row in enumerate(rows):
        lines = "".join(
            "<tr>" + cell(c) + cell("missing" if row["values"][c] is None else row["values"][c])
            + "".join(cell(f"{scores[i, j]:+.4f}") for scores in explained.values()) + "</tr>"
            for j, c in enumerate(columns)
        )  # fmt: skip
        title = f"Row {i}: {row['actual']} → predicted {row['predicted']} ({row['probability']:.3f})"
        sections.append(
            f"<h3>{html.escape(title)}</h3><div class='row'><table>{header}{lines}</table>"
            f"<img src='{data_uri(_row_figure(columns, explained, i))}' alt='{html.escape(title)}'></div>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Glasswork — table attributions</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}.row{{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}}</style></head><body>
<h1>Glasswork — table attributions</h1>
<p>Each method scores every column's part in the probability of the predicted class, starting
from a row with {html.escape(BASELINE)}; faithfulness sets the top columns to those values
(comprehensiveness, higher is better) or keeps only them (sufficiency, lower is better), random
column orders in brackets; the randomisation check passes a method whose mean Spearman over the
cascade is below {e.sanity_max_spearman}.</p>
<table><tr><th>method</th><th>comprehensiveness AOPC</th><th>sufficiency AOPC</th><th>randomisation</th></tr>
{summary}</table>{pictures}
<h2>Probe rows (red: for the predicted class; blue: against it)</h2>{"".join(sections)}
</body></html>"""
