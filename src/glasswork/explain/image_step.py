"""The ``explain`` step for ``task=image_classification``: heatmaps of every configured method over
the probe images, how faithful each is (patch deletion and insertion against random orders), the
cascading randomisation check, agreement between methods and the mean saliency of each class."""

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
import torch
from omegaconf import DictConfig

from glasswork import tracking
from glasswork.data.image_batches import decode_all
from glasswork.data.prepare import load_labels, load_probe, load_split
from glasswork.errors import ConfigError
from glasswork.explain.budget import check_share, cost
from glasswork.explain.embeddings import check_projection, png_bytes, project, projection_figure, projection_page
from glasswork.explain.faithfulness import check_alpha, check_measure, faithfulness_figure
from glasswork.explain.pixels import METHODS, agreement, explain_pixels, faithfulness_pixels, gains_by_image
from glasswork.explain.report import figure_sections, quality_rows
from glasswork.explain.sanity import cascade_figure, check_sanity, randomisation_check
from glasswork.models.backbone import inference_device, model_dir
from glasswork.outputs import atomic_dir, write_json
from glasswork.steps import output

log = logging.getLogger(__name__)


def check_image_methods(methods, setting: str = "explain.methods", allow_none: bool = False) -> None:
    """Refuse an unknown image method or (unless ``allow_none``) an empty list."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not (methods or allow_none):
        raise ConfigError(f"{setting}={list(methods)}: unknown {unknown}; valid methods for images: {list(METHODS)}")


def check_patch(patch, shape: tuple[int, int]) -> None:
    """A patch of at least 1 pixel and at most half the image's shorter side."""
    if isinstance(patch, bool) or not isinstance(patch, int) or not 1 <= patch <= min(shape) // 2:
        raise ConfigError(
            f"explain.patch_size={patch!r}: expected a whole number of pixels from 1 to {min(shape) // 2} "
            f"(half the {shape[1]} x {shape[0]} image's shorter side)"
        )


def explain_images(cfg: DictConfig) -> dict:
    """Explain the ``explain.n_probe`` probe images; write ``artifacts/explain/`` (attributions.html,
    heatmaps.png, class_saliency.png, faithfulness.png, randomisation.png, embeddings.png and .html,
    attributions.json, metrics.json) and log them to the model's MLflow run."""
    from glasswork.tasks.image import ImagePredictor

    started = time.perf_counter()
    e = cfg.explain
    check_image_methods(e.methods)
    check_image_methods(e.sanity_methods, "explain.sanity_methods", allow_none=True)
    check_measure(e.fractions, e.n_random)
    check_sanity(e.sanity_n_texts, None)
    check_share(e.max_share_of_train)
    check_alpha("explain.contrast_alpha", e.contrast_alpha)
    check_projection(e.projection, e.projection_max)
    names = load_labels(cfg)["names"]
    predictor = ImagePredictor(model_dir(cfg), device=inference_device(cfg.trainer))
    net, device = predictor.net, predictor.device
    probe, test = load_probe(cfg), load_split(cfg, "test")
    x = predictor.normalize(decode_all(probe["image"].tolist())).to(device)
    check_patch(e.patch_size, tuple(x.shape[-2:]))
    with torch.inference_mode():
        probs = torch.softmax(net(x).float(), -1).cpu().numpy()
    predicted = probs.argmax(1).tolist()

    def explain_with(model, pixels=x, targets=predicted, methods=tuple(e.methods)):
        return explain_pixels(model, pixels, targets, methods, n_steps=e.n_steps, patch=e.patch_size)

    explained = explain_with(net)
    metrics: dict[str, float] = faithfulness_pixels(
        net, x, predicted, explained, list(e.fractions), patch=e.patch_size, n_random=e.n_random, seed=cfg.seed
    )
    for a, b in combinations(explained, 2):
        metrics[f"agreement/{a}_vs_{b}"] = agreement(explained[a], explained[b])
    sanity_png = None
    sanity_methods = [m for m in e.methods if m in e.sanity_methods]
    if sanity_methods:
        sample = test.sample(n=min(len(test), e.sanity_n_texts), random_state=cfg.seed)
        xs = predictor.normalize(decode_all(sample["image"].tolist())).to(device)
        with torch.inference_mode():
            ts = net(xs).argmax(-1).tolist()
        found, curves = randomisation_check(
            net,
            lambda model: explain_with(model, xs, ts, tuple(sanity_methods)),
            agreement,
            seed=cfg.seed,
            max_spearman=e.sanity_max_spearman,
        )
        metrics |= found
        sanity_png = png_bytes(cascade_figure(curves, len(sample), e.sanity_max_spearman))
    versus = image_contrast(cfg, predictor, test, load_labels(cfg))
    for k, change in versus.get("global_faithfulness", {}).get("change", {}).items():
        if "difference" in change:
            metrics[f"contrast/global_{k}_change"] = change["difference"]
            metrics[f"contrast/global_{k}_fell"] = int(change["verdict"] == "lower")
    saliency_png, reference = _class_saliency(predictor, test, names, cfg)
    metrics["class_saliency/n_images"] = reference["n_texts"]
    metrics["probe_accuracy"] = float(np.mean(np.asarray(predicted) == probe["label"].to_numpy()))
    quality = faithfulness_figure(metrics, list(explained), list(e.fractions))
    for ax in quality.axes:
        ax.set_xlabel(f"% of {e.patch_size}x{e.patch_size} patches, ranked by the explanation")
    quality_png = png_bytes(quality)
    heatmaps_png = png_bytes(_heatmaps(probe, x, explained, probs, names))
    projection_png, projection_html = _projection(predictor, test, names, cfg)
    metrics |= cost(cfg, started)
    figures = {
        "Heatmaps: each probe image and where each method finds the evidence for the predicted class": heatmaps_png,
        "How faithful each explanation is (probe images; dashed: a random order of patches)": quality_png,
        "Model-randomisation check: layers re-initialised from the top, one more at a time": sanity_png,
        "Mean |integrated gradients| of the test images each class is predicted for": saliency_png,
        "Where the model puts the test images (embeddings.html: hover a point to see the image)": projection_png,
    }
    with tracking.step_run(cfg, "explain"), atomic_dir(output(cfg, "explain")) as out:
        (out / "heatmaps.png").write_bytes(heatmaps_png)
        (out / "faithfulness.png").write_bytes(quality_png)
        (out / "class_saliency.png").write_bytes(saliency_png)
        (out / "embeddings.png").write_bytes(projection_png)
        (out / "embeddings.html").write_text(projection_html, encoding="utf-8")
        if sanity_png is not None:
            (out / "randomisation.png").write_bytes(sanity_png)
        page = _page(probe, probs, names, metrics, list(explained), figures, cfg)
        (out / "attributions.html").write_text(page, encoding="utf-8")
        write_json(
            out / "attributions.json",
            {
                "baseline": "the training split's mean image (zero once normalised)",
                "patch_size": e.patch_size,
                "images": [
                    {"actual": names[int(a)], "predicted": names[p], "probability": float(probs[i, p])}
                    for i, (a, p) in enumerate(zip(probe["label"], predicted, strict=True))
                ],
                "scores": {m: np.round(v, 6).tolist() for m, v in explained.items()},
            },
        )
        write_json(out / "contrast.json", {"method": "integrated_gradients", **versus})
        write_json(out / "global_importance.json", reference)  # the drift step's explanation baseline
        write_json(out / "metrics.json", {"explain": metrics})
        mlflow.log_metrics({f"explain/{k}": v for k, v in metrics.items()})
        mlflow.log_artifacts(str(out), "explain")
    log.info("explain: %s", {k: round(v, 4) for k, v in metrics.items() if "_top" not in k})
    return metrics


def image_contrast(cfg: DictConfig, predictor, test: pd.DataFrame, labels: dict) -> dict:
    """How faithful integrated gradients are for this model and for the champion on the same test
    images (``explain.faithfulness_max_texts`` of them, seeded), each model explaining its own
    prediction from its own normalisation: the paired change of each gain at
    ``explain.contrast_alpha``, which the register step's faithfulness gate reads. As the text
    task writes it (:func:`glasswork.explain.contrast.contrast`)."""
    from glasswork.explain.contrast import champion_model_dir, paired_faithfulness
    from glasswork.outputs import read_json
    from glasswork.tasks.image import ImagePredictor

    found = champion_model_dir(cfg, tracking.current_run_id(cfg))
    if found is None:
        return {"status": "no champion to compare with"}
    version, folder = found
    if read_json(folder / "labels.json")["classes"] != labels["classes"]:
        return {"status": f"champion v{version} predicts other classes: not compared"}
    champion = ImagePredictor(folder, device=predictor.device)
    if champion.net.config["image_size"] != predictor.net.config["image_size"]:
        return {"status": f"champion v{version} reads images of another size: not compared"}
    e = cfg.explain
    sample = test.sample(n=min(len(test), e.faithfulness_max_texts), random_state=cfg.seed)
    raw = decode_all(sample["image"].tolist())

    def measured(model) -> dict:
        x = model.normalize(raw).to(model.device)
        with torch.inference_mode():
            targets = model.net(x).argmax(-1).tolist()
        scores = explain_pixels(model.net, x, targets, ("integrated_gradients",), n_steps=e.n_steps)
        return gains_by_image(model.net, x, targets, scores["integrated_gradients"], list(e.fractions),
                              patch=e.patch_size, n_random=e.n_random, seed=cfg.seed)  # fmt: skip

    mine, theirs = measured(predictor), measured(champion)
    return {
        "status": f"compared with champion v{version}",
        "champion_version": version,
        "global_faithfulness": paired_faithfulness(mine, theirs, e.contrast_alpha),
    }


def _heatmaps(probe: pd.DataFrame, x: torch.Tensor, explained: dict[str, np.ndarray], probs, names) -> plt.Figure:
    """One row per probe image: the image, then each method's map over it (red: for the class)."""
    grey = x.float().mean(1).cpu().numpy()
    rows, cols = len(probe), 1 + len(explained)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    for i in range(rows):
        predicted = int(probs[i].argmax())
        actual = names[int(probe["label"].iloc[i])]
        axes[i, 0].imshow(grey[i], cmap="gray")
        axes[i, 0].set_title(f"{actual} → {names[predicted]} ({probs[i, predicted]:.2f})", fontsize=7)
        for j, (method, scores) in enumerate(explained.items(), start=1):
            limit = float(np.abs(scores[i]).max()) or 1.0
            axes[i, j].imshow(grey[i], cmap="gray", alpha=0.5)
            axes[i, j].imshow(scores[i], cmap="bwr", vmin=-limit, vmax=limit, alpha=0.7)
            if i == 0:
                axes[i, j].set_title(method.replace("_", " "), fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _class_saliency(predictor, test: pd.DataFrame, names: list[str], cfg: DictConfig) -> tuple[bytes, dict]:
    """Mean |integrated gradients| per predicted class over a seeded sample of test images, and
    the same maps summed up as the explanation-drift reference (``global_importance.json``)."""
    from glasswork.explain.pixel_drift import reference_view

    e = cfg.explain
    n = min(len(test), e.global_max_texts or len(test))
    sample = test.sample(n=n, random_state=cfg.seed)
    view, scores, targets = reference_view(predictor, sample["image"].tolist(), cfg)
    predicted = np.asarray(targets)
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.1 * rows), squeeze=False)
    for k, name in enumerate(names):
        ax = axes.ravel()[k]
        chosen = predicted == k
        if chosen.any():
            ax.imshow(scores[chosen].mean(0), cmap="magma")
        ax.set_title(f"{name} (n={int(chosen.sum())})", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return png_bytes(fig), view


def _projection(predictor, test: pd.DataFrame, names: list[str], cfg: DictConfig) -> tuple[bytes, str]:
    """The plane of penultimate-layer embeddings of a seeded sample of the test images
    (``explain.projection``), as a PNG and as a page that shows each image on hover."""
    from glasswork.data.images import thumbnail_uris

    sample = test.sample(n=min(len(test), cfg.explain.projection_max), random_state=cfg.seed)
    images = sample["image"].tolist()
    vectors, probs = predictor.embed(decode_all(images), cfg.trainer.eval_batch_size)
    labels = sample["label"].to_numpy()
    points, used = project(vectors, cfg.explain.projection, cfg.seed)
    kind = ("images", "penultimate-layer embeddings")
    png = png_bytes(projection_figure(points, labels, probs.argmax(1), names, used, kind[1]))
    where = sample["path"].astype(str) if "path" in sample else [f"test image {i}" for i in sample.index]
    page = projection_page(points, list(where), labels, probs, names, used, kind, thumbnail_uris(images))
    return png, page


def _page(probe, probs, names, metrics, methods, figures, cfg) -> str:
    """The HTML page: the figures and a table per method; every name from the data is escaped."""
    e = cfg.explain

    def cell(value) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    images = "".join(
        "<tr>" + cell(i) + cell(names[int(a)]) + cell(names[int(p.argmax())]) + cell(f"{p.max():.3f}") + "</tr>"
        for i, (a, p) in enumerate(zip(probe["label"], probs, strict=True))
    )
    rows, pictures = quality_rows(methods, metrics, e.sanity_max_spearman), figure_sections(figures)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Glasswork — image attributions</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}</style></head><body><h1>Glasswork — image attributions</h1>
<p>Integrated gradients start from the training split's mean image; faithfulness sets the top
{e.patch_size}&times;{e.patch_size} patches to that mean (comprehensiveness, higher is better) or keeps
only them (sufficiency, lower is better), random patch orders in brackets; the randomisation check
passes a method whose mean Spearman over the cascade is below {e.sanity_max_spearman}.</p>
<table><tr><th>method</th><th>comprehensiveness AOPC</th><th>sufficiency AOPC</th><th>randomisation</th></tr>
{rows}</table>{pictures}
<h2>Probe images</h2><table><tr><th>#</th><th>actual</th><th>predicted</th><th>probability</th></tr>{images}</table>
</body></html>"""
