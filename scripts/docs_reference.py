"""Write the manual's settings reference, docs/reference/settings.md, from conf/ and the step list.

    python scripts/docs_reference.py           # rewrite the page
    python scripts/docs_reference.py --check   # exit 1 when the committed page is not what this writes

Every value on the page is what Hydra composes from conf/ (checked with glasswork.config.load_config,
as a run checks it), every description is the YAML comment beside or above the key in conf/, and
each step's inputs and outputs are glasswork.steps' declaration: the page cannot drift from the
code, and tests/code/test_docs.py fails when the committed page is stale. The step pages include
their sections of it (pymdownx.snippets, between the `--8<-- [start:NAME]` markers).
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from glasswork.config import conf_dir, load_config
from glasswork.steps import STEPS, TASK_PATHS

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reference" / "settings.md"

# The other tasks by a short name (the page's columns); the text task is the default.
TASKS = {
    "image": "task=image_classification",
    "tabular": "task=tabular_classification",
    "generation": "task=text_generation",
}
# Groups every task shares: each key's default, and where a task or another option sets it otherwise.
SHARED = {
    "trainer": {**TASKS, "gpu": "trainer=gpu", "ddp": "trainer=ddp", "fsdp": "trainer=fsdp"},
    "explain": TASKS,
    "drift": TASKS,
    "monitor": TASKS,
    "registry": TASKS,
    "tracking": {"server": "tracking=server"},
    "paths": TASKS,
}
# Groups whose keys are the task's own: per task, its default option beside the others that matter.
PER_TASK = {
    "data": {
        "text_classification": ["data=rotten_tomatoes", "data=table"],
        "image_classification": ["data=fashion_mnist", "data=images"],
        "tabular_classification": ["data=fair", "data=tabular"],
        "text_generation": ["data=instructions", "data=table"],
    },
    "model": {
        "text_classification": ["model=minilm", "model=tiny_bert"],
        "image_classification": ["model=small_cnn", "model=pretrained_image"],
        "tabular_classification": ["model=mlp"],
        "text_generation": ["model=smollm2", "model=tiny_llama", "model=tiny_t5"],
    },
}
DESCRIBED_BY_OWN_OPTION = {"data"}
GROUP_ORDER = ("task", "data", "model", "trainer", "explain", "drift", "monitor", "registry", "tracking", "paths")
# How the step list writes its paths, for the reader.
PLACEHOLDERS = {
    "`{artifacts}`": "`paths.artifacts_dir`",
    "`{processed}`": "`paths.processed_dir`",
    "`{data_path}`": "`data.path`",
    "`{drift_path}`": "`drift.current_path`",
}


# --- conf/'s comments ----------------------------------------------------------------------------

KEY_LINE = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*))?$")
COMMENT_LINE = re.compile(r"^( *)#\s?(.*)$")
INLINE_COMMENT = re.compile(r"\s+#\s?(.*)$")


@dataclass
class Comments:
    """What one conf/ file says: its opening comment, and the comment of each key (dotted, global)."""

    header: str
    keys: dict[str, str]


def file_prefix(path: Path, text: str) -> str:
    """The dotted prefix of a file's keys: its group's name, or none for `@package _global_` files."""
    if text.startswith("# @package _global_") or path.parent == conf_dir():
        return ""
    return path.parent.name + "."


@dataclass
class CommentReader:
    """Reads one conf/ file's lines in order (read_comments), keeping track of where it is."""

    prefix: str
    header: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # a comment block waiting for its key
    keys: dict[str, str] = field(default_factory=dict)
    stack: list[tuple[int, str]] = field(default_factory=list)  # (indent, name) of the mappings we are in
    in_header: bool = True
    continued: tuple[str, int] | None = None  # a key whose inline comment deeper comment lines continue

    def comment(self, indent: int, words: str) -> None:
        if self.continued is not None and indent > self.continued[1]:
            self.keys[self.continued[0]] += " " + words
        elif self.in_header:
            self.header.append(words)
        else:
            self.pending.append(words)

    def other(self) -> None:
        """A blank line closes the header and parts a comment from the key below; the defaults
        list's items take no comments."""
        self.in_header = self.in_header and not self.header
        self.pending = []
        self.continued = None

    def key(self, indent: int, name: str, value: str) -> None:
        self.in_header = False
        while self.stack and self.stack[-1][0] >= indent:
            self.stack.pop()
        full = self.prefix + ".".join([*(k for _, k in self.stack), name])
        inline = INLINE_COMMENT.search(value)
        words = " ".join([*self.pending, inline.group(1).strip() if inline else ""]).strip()
        if words and name != "defaults":
            self.keys[full] = words
        self.continued = (full, indent) if inline else None
        self.pending = []
        if not INLINE_COMMENT.sub("", value).strip():  # a mapping: its keys follow, indented
            self.stack.append((indent, name))


def read_comments(path: Path) -> Comments:
    """The comments of a conf/ file, by simple line parsing: a key's inline `# ...` (and the deeper
    comment lines that continue it), or the comment block just above the key. The block at the top
    of the file, before any key, describes the file."""
    text = path.read_text(encoding="utf-8")
    reader = CommentReader(file_prefix(path, text))
    for line in text.splitlines():
        if line.startswith("# @package"):
            continue
        if comment := COMMENT_LINE.match(line):
            reader.comment(len(comment.group(1)), comment.group(2).strip())
        elif key := KEY_LINE.match(line):
            reader.key(len(key.group(1)), key.group(2), key.group(3) or "")
        else:
            reader.other()
    return Comments(" ".join(reader.header).strip(), reader.keys)


def all_comments() -> dict[Path, Comments]:
    """Every conf/ file's comments."""
    return {path: read_comments(path) for path in sorted(conf_dir().rglob("*.yaml"))}


def describe(key: str, files: list[Path], comments: dict[Path, Comments]) -> str:
    """The first comment on ``key`` in ``files``, in that order (only those: another option's
    comment may be about its own value)."""
    return next((comments[path].keys[key] for path in files if key in comments[path].keys), "")


# --- composing -----------------------------------------------------------------------------------


@functools.cache
def compose_raw(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The composed config as conf/ writes it: interpolations kept, since they are the default."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=False)  # type: ignore[return-value]


def check_against_a_run(overrides: tuple[str, ...]) -> None:
    """The page shows what a run gets: load_config (which checks every key against the schema and
    resolves) gives the same keys, and the same value wherever conf/ writes no interpolation."""
    raw, run = flatten(compose_raw(overrides)), flatten(OmegaConf.to_container(load_config(list(overrides))))
    assert raw.keys() == run.keys(), sorted(raw.keys() ^ run.keys())
    differ = [k for k, v in raw.items() if not (isinstance(v, str) and "${" in v) and run[k] != v]
    assert not differ, f"{overrides}: {differ}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of every leaf of a mapping; lists and empty mappings are leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def group_defaults(overrides: tuple[str, ...], group: str) -> dict[str, Any]:
    return {f"{group}.{k}": v for k, v in flatten(compose_raw(overrides)[group]).items()}


def defaults_list(path: Path) -> list[str]:
    """The options a conf/ file's defaults list names (``group: option`` or, in a group, ``option``)."""
    listed = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
    return [f"{k}={v}" if isinstance(item, dict) else item for item in listed
            for k, v in (item.items() if isinstance(item, dict) else [(None, None)])]  # fmt: skip


def root_default(group: str) -> str:
    """A group's default option, from conf/config.yaml's defaults list."""
    return next(o.partition("=")[2] for o in defaults_list(conf_dir() / "config.yaml") if o.startswith(f"{group}="))


def option_files(override: str) -> list[Path]:
    """The file an override picks (``trainer=ddp``), then the files its defaults list builds on
    (gpu.yaml, cpu.yaml): where the comments on its keys are."""
    group, _, option = override.partition("=")
    path = conf_dir() / group / f"{option}.yaml"
    parents = [p for p in defaults_list(path) if p != "_self_" and "=" not in p and "/" not in p]
    return [path, *(f for p in parents for f in option_files(f"{group}={p}"))]


# --- markdown ------------------------------------------------------------------------------------


def code(value: Any) -> str:
    """A value as YAML writes it, in a code span (a pipe inside a code span does not split a table cell)."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = '""' if value == "" else value
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
        text = text.removesuffix("...").strip()
    return f"`{text}`"


def cell(text: str) -> str:
    """Prose for a table cell: pipes escaped, outside code spans."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def first_leaf_prefixes(keys: list[str], files: list[Path], comments: dict[Path, Comments]) -> dict[str, str]:
    """A nested mapping's own comment (drift.shift, registry.promote_if), put before its first key's."""
    said: dict[str, str] = {}
    seen: set[str] = set()
    for key in keys:
        parts = key.split(".")
        for depth in range(2, len(parts)):
            parent = ".".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                words = describe(parent, files, comments)
                if words:
                    said[key] = (said.get(key, "") + " " + words).strip()
    return said


def descriptions(keys: list[str], files: list[Path], comments: dict[Path, Comments]) -> dict[str, str]:
    """Each key's description for a table cell, from ``files`` in that order."""
    lead = first_leaf_prefixes(keys, files, comments)
    return {k: cell(" ".join(w for w in (lead.get(k, ""), describe(k, files, comments)) if w)) for k in keys}


def task_file(task: str) -> Path:
    return conf_dir() / "task" / f"{task}.yaml"


def task_overrides(task: str) -> tuple[str, ...]:
    """The overrides that pick ``task`` (none for the default, so that its config is composed once)."""
    return () if task == "text_classification" else (f"task={task}",)


def options_list(group: str, comments: dict[Path, Comments]) -> list[str]:
    default = root_default(group)
    lines = []
    for path in sorted((conf_dir() / group).glob("*.yaml")):
        mark = " (default)" if path.stem == default else ""
        about = comments[path].header
        lines.append(f"- `{group}={path.stem}`{mark}" + (f": {about}" if about else ""))
    return lines


def shared_table(group: str, comments: dict[Path, Comments]) -> list[str]:
    """key | default | where another task or option sets it otherwise | description."""
    default = group_defaults((), group)
    others = {label: group_defaults((o,), group) for label, o in SHARED[group].items()}
    files = option_files(f"{group}={root_default(group)}")
    for o in SHARED[group].values():
        files += [task_file(o.partition("=")[2])] if o.startswith("task=") else option_files(o)
    keys = list(dict.fromkeys([*default, *(k for values in others.values() for k in values)]))
    said = descriptions(keys, files, comments)
    rows = ["| key | default | elsewhere | description |", "| --- | --- | --- | --- |"]
    for key in keys:
        differing: dict[str, list[str]] = {}
        for label, values in others.items():
            if key not in default or key not in values or values[key] != default[key]:
                differing.setdefault(code(values[key]) if key in values else "–", []).append(label)
        elsewhere = "; ".join(f"{', '.join(labels)}: {value}" for value, labels in differing.items())
        shown = code(default[key]) if key in default else "–"
        rows.append(f"| `{key}` | {shown} | {elsewhere} | {said[key]} |")
    return rows


def per_task_table(group: str, task: str, comments: dict[Path, Comments]) -> list[str]:
    """key | one column per option (the task's default first) | description."""
    options = PER_TASK[group][task]
    columns = {}
    for i, option in enumerate(options):
        raw = compose_raw(task_overrides(task) + ((option,) if i else ()))
        # The first option must be the task's default, composed without naming it.
        assert i or raw[group]["name"] == option.partition("=")[2], f"{option} is not {task}'s default"
        columns[option] = {f"{group}.{k}": v for k, v in flatten(raw[group]).items()}
    # Data: a user reads the own-data option's comments first (they are written for them).
    ordered = options[::-1] if group in DESCRIBED_BY_OWN_OPTION else options
    files = [f for o in ordered for f in option_files(o)] + [task_file(task)]
    keys = list(dict.fromkeys(k for values in columns.values() for k in values))
    said = descriptions(keys, files, comments)
    rows = [
        "| key | " + " | ".join(f"`{o}`" for o in options) + " | description |",
        "| --- | " + " | ".join("---" for _ in options) + " | --- |",
    ]
    for key in keys:
        values = " | ".join(code(v[key]) if key in v else "–" for v in columns.values())
        rows.append(f"| `{key}` | {values} | {said[key]} |")
    return rows


def section(name: str, body: list[str]) -> list[str]:
    """Lines that a page can include with `--8<-- "docs/reference/settings.md:NAME"`."""
    return [f"<!-- --8<-- [start:{name}] -->", "", *body, "", f"<!-- --8<-- [end:{name}] -->", ""]


def task_section(comments: dict[Path, Comments]) -> list[str]:
    rows = ["| option | `task._target_` | what it is |", "| --- | --- | --- |"]
    for path in sorted((conf_dir() / "task").glob("*.yaml")):
        target = compose_raw(task_overrides(path.stem))["task"]["_target_"]
        rows.append(f"| `task={path.stem}` | `{target}` | {cell(comments[path].header)} |")
    seed = compose_raw(())["seed"]
    about = describe("seed", [conf_dir() / "config.yaml"], comments)
    return ["## task", "", *section("task", [*rows, "", f"`seed` (a root key, default `{seed}`): {about}"])]


def group_section(group: str, comments: dict[Path, Comments]) -> list[str]:
    lines = [f"## {group}", "", *options_list(group, comments), ""]
    if group in SHARED:
        return [*lines, *section(group, shared_table(group, comments))]
    for task in PER_TASK[group]:
        lines += [f"### {group}: {task}", "", *section(f"{group}-{task}", per_task_table(group, task, comments))]
    return lines


def paths_list(paths: tuple[str, ...]) -> str:
    return ", ".join(f"`{p}`" for p in paths) if paths else "none"


def split_code(paths: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(data and outputs, source files): DVC tracks both as a stage's dependencies."""
    return tuple(p for p in paths if not p.startswith("src/")), tuple(p for p in paths if p.startswith("src/"))


def step_section(step) -> list[str]:
    reads, code_deps = split_code(step.deps)
    items = [
        f"- **Command**: `glasswork {step.name}` ({step.summary})",
        f"- **Reads**: {paths_list(reads)}",
        f"- **Writes**: {paths_list(step.outs)}",
        f"- **Metrics** (`dvc metrics`): {paths_list(step.metrics)}",
        f"- **Plots** (`dvc plots`): {paths_list(step.plots)}",
        f"- **Settings it depends on** (DVC params): {paths_list(step.params)}",
        f"- **Retries** in the Prefect flow: {step.retries}",
    ]
    for task, steps in TASK_PATHS.items():
        extra = steps.get(step.name, {})
        also_reads, also_code = split_code(extra.get("deps", ()))
        for verb, paths in (("reads", also_reads), ("writes", extra.get("outs", ()))):
            if paths:
                items.append(f"- **`task={task}` also {verb}**: {paths_list(paths)}")
        code_deps += also_code
    items.append(f"- **Code** (DVC re-runs the stage when it changes): {paths_list(tuple(dict.fromkeys(code_deps)))}")
    items.append("- **Paths**: " + ", ".join(f"{k} is {v}" for k, v in PLACEHOLDERS.items()))
    return [f"### {step.name}", "", *section(f"step-{step.name}", items)]


INTRO = """\
# Settings reference

<!-- Generated by scripts/docs_reference.py from conf/ and src/glasswork/steps.py: do not edit by
hand. Run `.venv/bin/python scripts/docs_reference.py` after changing conf/ or the step list. -->

Every setting of every config group with its default, as Hydra composes `conf/` for each task, and
the comment `conf/` gives it. **elsewhere** lists the keys another task or option sets otherwise:
`image`, `tabular` and `generation` are `task=image_classification`, `task=tabular_classification`
and `task=text_generation`; `gpu`, `ddp`, `fsdp` and `server` are `trainer=...` and
`tracking=...` options. A value in `${...}` is an interpolation, resolved when the run composes its
config; `???` must be given. Change any of them on the command line (`trainer.max_epochs=2`), see
[Configuration](../configuration.md). This page is generated by `scripts/docs_reference.py`, and a
test fails when it is stale.
"""

STEPS_INTRO = (
    """\
## Steps: what each reads and writes

As `src/glasswork/steps.py` declares them (the Prefect flow and `dvc.yaml` are made from the same
list). """
    + ", ".join(f"{k} is {v}" for k, v in PLACEHOLDERS.items())
    + """; the other tasks
write under their own folders (`artifacts/TASK/`, `data/TASK/`).
"""
)


def render() -> str:
    """The whole page."""
    for task in PER_TASK["data"]:  # every task
        check_against_a_run(task_overrides(task))
    comments = all_comments()
    lines = [INTRO, *task_section(comments)]
    for group in GROUP_ORDER[1:]:
        lines += group_section(group, comments)
    lines += [STEPS_INTRO]
    for step in STEPS:
        lines += step_section(step)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description=f"Write {PAGE.relative_to(REPO)} (every setting with its default and comment) from conf/ "
        "and the step list; `make dvc-sync` runs it."
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the committed page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text
        print(f"{PAGE.relative_to(REPO)} is {'stale' if stale else 'up to date'}")
        return int(stale)
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
