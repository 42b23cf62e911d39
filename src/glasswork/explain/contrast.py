"""Champion vs challenger on the same probe texts: do the two models rely on the same tokens?

The current ``champion`` (if any) is loaded from the registry and explained with the same
method on the same probe; per text, the Spearman correlation of the two attributions, and
over all texts, the words whose attribution moved most (with how often they occur, so that a
rare word cannot top the list by accident); and how faithful the champion's attributions are on
those texts, measured as the challenger's are, so that a new model whose explanations carry its
predictions less well shows it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from scipy.stats import spearmanr

from glasswork.explain.attributions import TokenAttribution
from glasswork.explain.faithfulness import SUMMARY, gain_change, measure
from glasswork.explain.gate import whole_words
from glasswork.models.backbone import inference_device, load_tokenizer, load_trained
from glasswork.outputs import read_json

log = logging.getLogger(__name__)


def paired_faithfulness(mine: dict, theirs: dict, alpha: float) -> dict:
    """This model's and the champion's faithfulness on the same sample (each as
    ``faithfulness_summary`` or ``gains_by_image`` gives it), with the paired change of each gain
    at ``alpha``: what ``contrast.json`` holds and the register step's faithfulness gate reads,
    for every task."""
    return {
        "n_texts": theirs["n_texts"],
        "champion": {k: theirs[k] for k in SUMMARY},
        "this_model": {k: mine[k] for k in SUMMARY},
        "alpha": alpha,
        "change": gain_change(theirs["by_text"], mine["by_text"], alpha, paired=True),
    }


def champion_version(cfg: DictConfig, this_run_id: str):
    """The champion's model version, or None when there is none other than this run's."""
    try:
        version = MlflowClient().get_model_version_by_alias(cfg.registry.model_name, cfg.registry.alias)
    except MlflowException:
        return None
    return None if version.run_id == this_run_id else version


def champion_model_dir(cfg: DictConfig, this_run_id: str) -> tuple[str, Path] | None:
    """The champion's version and local model folder, or None when there is nothing to compare."""
    version = champion_version(cfg, this_run_id)
    if version is None:
        return None
    local = mlflow.artifacts.download_artifacts(f"models:/{cfg.registry.model_name}/{version.version}")
    folder = Path(local) / "artifacts" / "model"
    return (str(version.version), folder) if (folder / "config.json").is_file() else None


def contrast(
    cfg: DictConfig,
    explain_fn,
    challenger: list[TokenAttribution],
    labels: dict,
    this_run_id: str,
    top: int = 10,
    global_faithfulness: tuple[Callable[[Any, Any], dict], dict] | None = None,
) -> dict:
    """Compare the challenger's attributions with the champion's on the same probe texts.

    ``global_faithfulness``: a function that measures a model's faithfulness on the global view's
    texts (``faithfulness_summary``'s output) and the challenger's own measure there; the
    champion is measured the same way and each gain's change gets a paired interval at
    ``explain.contrast_alpha``."""
    found = champion_model_dir(cfg, this_run_id)
    if found is None:
        return {"status": "no champion to compare with"}
    version, folder = found
    if read_json(folder / "labels.json")["classes"] != labels["classes"]:
        return {"status": f"champion v{version} predicts other classes: not compared"}
    device = inference_device(cfg.trainer)
    model, tokenizer = load_trained(folder, attn_implementation="eager", device=device), load_tokenizer(folder)
    champion = explain_fn(model, tokenizer)
    quality = measure(model, tokenizer, champion, cfg)  # as the explain step measures the challenger
    rhos: list[float] = []
    moved: defaultdict[str, float] = defaultdict(float)
    counts: defaultdict[str, int] = defaultdict(int)
    for new, old in zip(challenger, champion, strict=True):
        if new.tokens != old.tokens:
            continue  # another tokenizer: positions do not line up
        new_words, old_words = whole_words(new.tokens, new.scores), whole_words(old.tokens, old.scores)
        if len(new_words) > 2:
            rho = spearmanr([s for _, s in new_words], [s for _, s in old_words]).statistic
            rhos.append(0.0 if np.isnan(rho) else float(rho))
        for (word, a), (_, b) in zip(new_words, old_words, strict=True):
            moved[word] += a - b
            counts[word] += 1
    ranked = sorted(moved, key=lambda w: -abs(moved[w] / counts[w]))[:top]
    paired = {}
    if global_faithfulness is not None:
        measure_on_texts, mine = global_faithfulness
        theirs = measure_on_texts(model, tokenizer)
        paired = {"global_faithfulness": paired_faithfulness(mine, theirs, cfg.explain.contrast_alpha)}
    return paired | {
        "status": f"compared with champion v{version}",
        "champion_version": version,
        "n_compared": len(rhos),
        "rank_correlation": float(np.mean(rhos)) if rhos else float("nan"),
        "moved_most": [{"word": w, "mean_change": moved[w] / counts[w], "count": counts[w]} for w in ranked],
        "champion_faithfulness": {k: quality[k] for k in SUMMARY},
    }
