"""Training and validation curves of a run, drawn from what Lightning logged to MLflow."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
from mlflow.tracking import MlflowClient  # noqa: E402

LOSS = ("train/loss", "val/loss")
SCORES = ("train/acc_epoch", "val/acc", "val/macro_f1")


def history(client: MlflowClient, run_id: str, keys: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """Each logged metric of ``keys`` as (steps, values), in step order; absent keys left out."""
    found = {}
    for key in keys:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if points:
            found[key] = ([m.step for m in points], [m.value for m in points])
    return found


def curves_figure(client: MlflowClient, run_id: str) -> plt.Figure | None:
    """Loss (training steps and each validation) and accuracy / macro-F1 per validation and per
    epoch against the training step; ``None`` when the run logged none of them."""
    losses, scores = history(client, run_id, LOSS), history(client, run_id, SCORES)
    if not losses and not scores:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, found, title in ((left, losses, "loss"), (right, scores, "accuracy and macro-F1")):
        for key, (steps, values) in found.items():
            style = {"marker": "o", "markersize": 3} if len(steps) < 60 else {"linewidth": 1}
            ax.plot(steps, values, label=key, **style)
        ax.set_xlabel("training step")
        ax.set_title(title)
        if found:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
