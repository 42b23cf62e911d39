"""Kinds of model behind one pipeline: ``task=text_classification`` (:mod:`glasswork.tasks.base`)."""

from __future__ import annotations

from omegaconf import DictConfig

from glasswork.tasks.base import Predictor, Task

__all__ = ["Predictor", "Task", "build", "get_task", "require_steps", "task_name"]


def build(cfg: DictConfig) -> Task:
    """The task the config's ``task`` group names, built by Hydra's ``instantiate`` from its
    ``_target_`` and given the whole run's config."""
    from hydra.utils import instantiate

    # _recursive_=False: the run's config holds this very node, which must not be built again.
    return instantiate(cfg.task, cfg=cfg, _recursive_=False)


def task_name(cfg: DictConfig) -> str:
    """The configured task's name (``text_classification``, ...), from its class alone."""
    from hydra.utils import get_class

    task: Task = get_class(cfg.task._target_)  # type: ignore[assignment]  # the class: its attributes
    return task.name


def get_task(target: str, cfg: DictConfig) -> Task:
    """The task of class ``target`` (``module.Class``) for ``cfg`` (a recorded config without a
    ``task`` group, from before tasks existed, is the text task's)."""
    from hydra.utils import get_class

    return get_class(target)(cfg)


def require_steps(cfg: DictConfig, names: tuple[str, ...] | list[str]) -> None:
    """Refuse, before anything runs, a step the configured task does not have yet."""
    from hydra.utils import get_class

    from glasswork.errors import ConfigError

    task: Task = get_class(cfg.task._target_)  # type: ignore[assignment]  # the class: its attributes
    missing = [name for name in names if name not in task.steps]
    if missing:
        built = ", ".join(task.steps)
        raise ConfigError(
            f"task={task.name} has no {', '.join(missing)} step yet (built: {built}); run those one at a time, "
            f"e.g. `glasswork {task.steps[-1]} task={task.name}`"
        )
