"""The explain step's share of the training time (``explain.max_share_of_train``).

The probe is always explained whole: it is drawn by ``prepare``, versioned with the data and
compared across models; the randomisation check's texts too (its cost is fixed by the model's
depth). Both are spent before the plan is made. The global view, the part that grows with the
sample, is sized to what is left. Its first texts are explained first; the seconds they took give the cost of one text's
integrated gradients on this machine and at this data's lengths, and from it the cost of one
forward pass of a text. The rest of the step is planned in those forward passes:

- the global view's integrated gradients: ``global_n_steps`` steps of a forward and a backward
  (about three forwards) per text, and the baseline's forward;
- its faithfulness on the first ``faithfulness_max_texts`` texts: the full text, then each
  fraction deleted and kept, for the ranking and each of ``n_random`` random rankings;
- the embedding map: one forward per text;
- where a champion will be compared: the champion's integrated gradients and faithfulness on
  the probe, and its faithfulness on the global view's texts.

The plan keeps the largest global view that fits, never fewer than :data:`MIN_GLOBAL_TEXTS`
texts (fewer make its word lists and the drift step's reference noise). A seeded sample cut to
its first ``n`` texts is still a seeded sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from omegaconf import DictConfig

from glasswork.errors import ConfigError
from glasswork.outputs import read_json
from glasswork.steps import output

MIN_GLOBAL_TEXTS = 32
FORWARDS_PER_STEP = 3  # a forward and a backward pass cost about three forward passes


def training_seconds(cfg: DictConfig) -> float | None:
    """The train step's ``train/seconds`` (None for a model trained before it was recorded)."""
    trained = output(cfg, "train", "metrics.json")
    return read_json(trained).get("train/seconds") if trained.is_file() else None


def cost(cfg: DictConfig, started: float) -> dict[str, float]:
    """What a step took since ``started`` (``time.perf_counter()``), and its share of the training time."""
    seconds = time.perf_counter() - started
    found = {"seconds": round(seconds, 1)}
    if train_seconds := training_seconds(cfg):
        found["share_of_train"] = seconds / train_seconds
    return found


def check_share(share) -> None:
    """Refuse an ``explain.max_share_of_train`` that is not null or a share in (0, 1]."""
    if share is not None and (isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1):
        raise ConfigError(
            f"explain.max_share_of_train={share!r}: expected a share of the training time in (0, 1], "
            "or null to explain the configured samples whatever they cost"
        )


def faithfulness_forwards(e: DictConfig) -> int:
    """Forward passes per text of one faithfulness measure (``faithfulness.by_text``)."""
    return 1 + 2 * len(e.fractions) * (1 + e.n_random)


@dataclass(frozen=True)
class GlobalPlan:
    n_texts: int  # texts the global view takes
    wanted: int  # texts it would have taken without the budget
    seconds_left: float  # the step's budget left when the plan was made


def plan_global_view(
    e: DictConfig,
    *,
    done: int,
    seconds_done: float,
    wanted: int,
    seconds_left: float,
    n_probe: int,
    n_projected: int,
    champion: bool,
) -> GlobalPlan:
    """How many of the ``wanted`` global-view texts fit in ``seconds_left``, given that the
    first ``done`` took ``seconds_done`` of integrated gradients."""
    per_text = seconds_done / max(done, 1)
    forward = per_text / (FORWARDS_PER_STEP * e.global_n_steps + 1)
    faith = faithfulness_forwards(e) * forward

    def cost(n: int) -> float:  # seconds still to spend if the global view takes n texts
        measured = min(n, e.faithfulness_max_texts)
        seconds = (n - done) * per_text + measured * faith + n_projected * forward
        if champion:
            ig_probe = n_probe * (FORWARDS_PER_STEP * e.n_steps + 1) * forward
            seconds += ig_probe + n_probe * faith + measured * (per_text + faith)
        return seconds

    n = wanted
    floor = min(wanted, max(done, MIN_GLOBAL_TEXTS))
    while n > floor and cost(n) > seconds_left:
        n -= 1
    return GlobalPlan(n_texts=n, wanted=wanted, seconds_left=seconds_left)
