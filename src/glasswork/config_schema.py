"""The shape of every config group, checked after composition: names and types only.

Hydra already refuses ``data.foo=1`` for a key that does not exist, but not a typo inside a
YAML file a user wrote (``conf/local``, an experiment) nor an appended ``+trainer.max_epoch=2``.
Merging the composed config into these dataclasses catches all of them, and wrong types too,
and lets the error list the keys that *are* valid.

The values live in one place, ``conf/``: every field here is ``MISSING``, and a config that lacks
a key (one recorded with a model version before the key existed) takes the default from the
task's composed ``conf/`` (:func:`glasswork.config.schema_for`), never from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class PathsConfig:
    root: str = MISSING
    raw_dir: str = MISSING
    processed_dir: str = MISSING
    artifacts_dir: str = MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    source: str = MISSING
    path: str = MISSING
    format: str | None = MISSING
    text_column: str = MISSING
    label_column: str = MISSING
    registry_name: str = MISSING
    slice_columns: list[str] = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    max_rows: int | None = MISSING
    encoding: str = MISSING


@dataclass
class ImageDataConfig:
    """``task=image_classification``'s data: Fashion-MNIST or a user's folder or table of images."""

    name: str = MISSING
    source: str = MISSING
    path: str = MISSING
    format: str | None = MISSING
    path_column: str = MISSING
    label_column: str = MISSING
    registry_name: str = MISSING
    slice_columns: list[str] = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    max_rows: int | None = MISSING
    encoding: str = MISSING
    image_size: list[int] | None = MISSING
    image_mode: str | None = MISSING
    max_pixels: int = MISSING
    on_bad_image: str = MISSING
    idx_dir: str | None = MISSING


@dataclass
class ImageModelConfig:
    """``task=image_classification``'s model: :class:`glasswork.models.cnn.SmallCNN` (``channels``,
    ``hidden``, ``dropout``) or, with ``dir``, that folder's Hugging Face image classifier fine-tuned
    (:class:`glasswork.models.image_backbone.PretrainedImageNet`, ``model=pretrained_image``)."""

    name: str = MISSING
    channels: list[int] = MISSING
    hidden: int = MISSING
    dropout: float = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_fraction: float = MISSING
    dir: str | None = MISSING


@dataclass
class TabularDataConfig:
    """``task=tabular_classification``'s data: Fair's survey or a user's table of features."""

    name: str = MISSING
    source: str = MISSING
    path: str = MISSING
    format: str | None = MISSING
    label_column: str = MISSING
    feature_columns: list[str] | None = MISSING
    numeric_columns: list[str] = MISSING
    categorical_columns: list[str] = MISSING
    max_categories: int = MISSING
    max_classes: int = MISSING
    registry_name: str = MISSING
    slice_columns: list[str] = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    max_rows: int | None = MISSING
    encoding: str = MISSING


@dataclass
class TabularModelConfig:
    """``task=tabular_classification``'s model: :class:`glasswork.models.mlp.MLP`."""

    name: str = MISSING
    hidden: list[int] = MISSING
    dropout: float = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_fraction: float = MISSING


@dataclass
class GenerationDataConfig:
    """``task=text_generation``'s data: prompt/response pairs (the shipped reviews as questions,
    ``data=instructions``, or a user's table, ``data=table``)."""

    name: str = MISSING
    source: str = MISSING
    path: str = MISSING
    format: str | None = MISSING
    prompt_column: str = MISSING
    response_column: str = MISSING
    truncation: str = MISSING
    max_answers: int = MISSING
    registry_name: str = MISSING
    slice_columns: list[str] = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    max_rows: int | None = MISSING
    encoding: str = MISSING
    # data=table's own keys, which this task does not read
    text_column: Any = MISSING
    label_column: Any = MISSING


@dataclass
class GenerationModelConfig:
    """``task=text_generation``'s model: a Hugging Face causal LM (``glasswork.models.causal_lm``)."""

    name: str = MISSING
    source: str | None = MISSING
    dir: str | None = MISSING
    gguf_file: str | None = MISSING
    chat_template: str | None = MISSING
    finetune: str = MISSING
    lora: dict[str, Any] = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_fraction: float = MISSING
    max_length: int = MISSING
    max_new_tokens: int = MISSING
    random_init: dict[str, Any] | None = MISSING
    attn_implementation: str | None = MISSING


@dataclass
class TaskConfig:
    """Which kind of model: a class Hydra's ``instantiate`` builds (``glasswork.tasks``)."""

    _target_: str = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    package: str = MISSING
    dir: str | None = MISSING
    random_init: dict[str, Any] | None = MISSING
    max_length: Any = MISSING  # an int, or auto: from the data (prepare's data card)
    length_quantile: float = MISSING
    truncation: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_fraction: float = MISSING
    attn_implementation: str = MISSING


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: int = MISSING
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    max_epochs: int = MISSING
    max_steps: int | None = MISSING
    min_steps: int = MISSING
    max_minutes: float | None = MISSING
    val_check_interval: int | None = MISSING
    early_stopping_patience: int | None = MISSING
    limit_train_batches: float = MISSING
    batch_size: int = MISSING
    class_weights: str | None = MISSING
    lr_scale: float = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING
    log_every_n_steps: int = MISSING
    gradient_clip_val: float | None = MISSING
    compile: bool = MISSING
    compile_mode: str = MISSING
    compile_dynamic: bool | None = MISSING
    checkpoint_every_n_steps: int | None = MISSING
    checkpoint_every_minutes: float | None = MISSING
    progress_bar_refresh: int = MISSING
    bucket_by_length: bool = MISSING
    pad_to_multiple_of: int | None = MISSING
    matmul_precision: str = MISSING
    deterministic: bool = MISSING
    fast_dev_run: bool = MISSING


@dataclass
class ExplainConfig:
    methods: list[str] = MISSING
    n_probe: int = MISSING
    n_steps: int = MISSING
    internal_batch_size: int | None = MISSING
    token_budget: int | None = MISSING
    fractions: list[float] = MISSING
    n_random: int = MISSING
    faithfulness_max_texts: int = MISSING
    contrast_alpha: float = MISSING
    sanity_max_spearman: float = MISSING
    sanity_n_texts: int = MISSING
    sanity_max_length: int | None = MISSING
    sanity_methods: list[str] = MISSING
    sanity_max_stages: int | None = MISSING
    projection: str = MISSING
    projection_max: int = MISSING
    shap_samples: int = MISSING
    global_max_texts: int | None = MISSING
    global_n_steps: int = MISSING
    global_min_count: int = MISSING
    global_top_k: int = MISSING
    max_share_of_train: float | None = MISSING
    patch_size: int = MISSING  # images: the squares faithfulness removes together, and the occlusion window


@dataclass
class ImageShiftConfig:
    # drift.current=shifted (images): the test images as a worse camera takes them.
    contrast: float = MISSING
    brightness: float = MISSING
    blur: float = MISSING


@dataclass
class DriftConfig:
    current: str = MISSING
    current_path: str = MISSING
    sample_size: int = MISSING
    drift_share: float = MISSING
    text_method: str | None = MISSING
    embeddings_plot: bool = MISSING
    explain_sample: int = MISSING
    explanation_alpha: float = MISSING
    shift: ImageShiftConfig = field(default_factory=ImageShiftConfig)


@dataclass
class MonitorConfig:
    on_drift: str = MISSING
    max_accuracy_drop: float | None = MISSING
    on_explanation_drift: bool = MISSING
    text_column: str = MISSING
    label_column: str = MISSING
    encoding: str = MISSING
    sample_size: int = MISSING
    experiment_name: str = MISSING
    output_dir: str = MISSING
    incoming: str = MISSING


@dataclass
class PromoteIfConfig:
    bound: str = MISSING
    above: float = MISSING
    confidence: float = MISSING


@dataclass
class RegistryConfig:
    model_name: str = MISSING
    alias: str = MISSING
    thresholds: dict[str, float] = MISSING
    learned_nothing_gate: bool = MISSING
    compare_metric: str = MISSING
    promote_if: PromoteIfConfig = field(default_factory=PromoteIfConfig)
    explain_thresholds: dict[str, float] | None = MISSING
    forbidden_tokens: list[str] = MISSING
    forbidden_top_k: int = MISSING
    slice_alpha: float | None = MISSING
    faithfulness_gate: bool = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: str = MISSING
    experiment_name: str = MISSING
    run_name: str | None = MISSING


@dataclass
class GlassworkConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    # Any: the task decides the shape of its data and model groups (TASK_SCHEMAS).
    data: Any = field(default_factory=DataConfig)
    model: Any = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = MISSING


# The shape of the data and model groups of each task, by the task's class.
TASK_SCHEMAS: dict[str, tuple[type, type]] = {
    "glasswork.tasks.text.TextClassification": (DataConfig, ModelConfig),
    "glasswork.tasks.image.ImageClassification": (ImageDataConfig, ImageModelConfig),
    "glasswork.tasks.tabular.TabularClassification": (TabularDataConfig, TabularModelConfig),
    "glasswork.tasks.generation.TextGeneration": (GenerationDataConfig, GenerationModelConfig),
}
