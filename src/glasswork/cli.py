"""``glasswork``: run the whole pipeline (a Prefect flow) or one step of it (what dvc.yaml calls).

Every command takes Hydra overrides (``trainer.max_epochs=2 data=table data.path=x.csv``) or,
with ``--config FILE``, a frozen resolved config such as ``params.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

from glasswork.errors import GlassworkError, Interrupted

EXAMPLES = """\
examples:
  glasswork run                                   # the default pipeline, offline
  glasswork run trainer.max_epochs=2 drift.current=test
  glasswork run data=table data.path=my.csv data.text_column=body data.label_column=stars
  glasswork train debug=fast                      # one step, tiny and quick
  glasswork show-config model=tiny_bert           # the composed config, resolved
  glasswork monitor data/raw/tweets.csv           # a new batch vs the champion's training data
"""


def config_groups() -> str:
    """Every config group and its options, read from ``conf/`` so that ``--help`` stays true."""
    from glasswork.config import CONF_DIR

    groups = sorted(p for p in CONF_DIR.iterdir() if p.is_dir()) if CONF_DIR.is_dir() else []
    listed = "   ".join(f"{g.name}={'|'.join(sorted(f.stem for f in g.glob('*.yaml')))}" for g in groups)
    return "config groups (pick with GROUP=OPTION, change keys with GROUP.KEY=VALUE):\n" + textwrap.fill(
        listed,
        width=100,
        initial_indent="  ",
        subsequent_indent="  ",
        break_on_hyphens=False,
        break_long_words=False,  # a group longer than a line stays whole: it is copied as it is
    )


def _parser() -> argparse.ArgumentParser:
    from glasswork.steps import STEPS

    epilog = config_groups() + "\n" + EXAMPLES

    parser = argparse.ArgumentParser(
        prog="glasswork",
        description="Train, evaluate, explain, watch and register deep models: classifiers of texts, images "
        "and tables, and generative language models.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every command takes -v (after its name): the libraries' own warnings, shown as they come.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also show the libraries' warnings that are hidden as harmless"
    )
    commands = {
        "run": "run every step as one Prefect flow (ingest → prepare → train → evaluate → explain → drift → register)"
    }
    commands |= {s.name: f"run one step: {s.summary}" for s in STEPS}
    commands |= {
        "show-config": "print the composed, resolved config",
        "dvc-sync": "write params.yaml and dvc.yaml from conf/ and the step list (other tasks: into dvc/TASK/)",
    }
    for name, text in commands.items():
        cmd = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides of conf/config.yaml")
        cmd.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="use this frozen, resolved config (e.g. params.yaml) instead of composing conf/",
        )
    text = "rebuild a registered model from its lineage tags and compare its test metrics"
    cmd = sub.add_parser("reproduce", help=text, description=text + ".", epilog=REPRODUCE_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])  # fmt: skip
    cmd.add_argument("uri", metavar="MODEL_URI", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides that locate the tracking store")
    cmd.add_argument("--tolerance", type=float, default=0.01, help="largest accepted |difference| (default 0.01)")
    cmd.set_defaults(config=None)
    text = "check a new batch with the champion: drift, estimated accuracy, action"
    cmd = sub.add_parser("monitor", help=text, description=text + ".", epilog=MONITOR_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])  # fmt: skip
    cmd.add_argument("batch", metavar="BATCH", help="a csv/parquet/jsonl file, or a folder of them")
    cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides (monitor.on_drift=..., ...)")
    cmd.set_defaults(config=None)
    return parser


MONITOR_EPILOG = """Scores every row of BATCH with models:/NAME@champion (registry.model_name, registry.alias),
compares a sample with the champion's own training data (found through its lineage tags) over
the text, its descriptors, the sentence embeddings, the predicted probability and the label,
estimates accuracy without labels, and logs one MLflow run (experiment monitor.experiment_name).
Outputs: artifacts/monitor/TIME-BATCH/ (predictions.parquet, report.html, explanation_report.html,
embeddings.html, drift.json).
Exit status: 0 no drift (or monitor.on_drift=none|retrain), 1 drift with an alert, 2 bad input.

  glasswork monitor data/raw/tweets.csv                 # alert on drift (the default)
  glasswork monitor data/incoming monitor.on_drift=retrain
"""


REPRODUCE_EPILOG = """The version's tags give the git commit, the data version (md5 of the prepared splits) and the
resolved config. The rebuild runs ingest, prepare, train and evaluate under
artifacts/reproduce/NAME-ALIAS/ (or NAME-vVERSION/) with that commit's code, logs a new MLflow run tagged
glasswork.reproduces, and exits 0 when every recorded test metric is within the tolerance,
1 when one is not, 2 when something it needs is missing (a commit, the data version).

  glasswork reproduce models:/glasswork-sentiment@champion
"""


def _config(args: argparse.Namespace):
    from glasswork.config import load_config, load_frozen

    if args.config is not None:
        if args.overrides:
            raise GlassworkError("--config takes a frozen config: pass overrides without --config, or edit the file")
        return load_frozen(args.config)
    return load_config(args.overrides)


def _dispatch(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.command == "show-config":
        from glasswork.config import to_yaml

        print(to_yaml(cfg), end="")
        return 0
    if args.command == "dvc-sync":
        from glasswork.dvc_files import write_dvc_files

        for path in write_dvc_files(cfg, Path.cwd()):
            print(f"wrote {path}")
        return 0
    if args.command == "reproduce":
        return _reproduce(args, cfg)
    if args.command == "monitor":
        from pipelines.monitoring import monitoring

        return 1 if monitoring(args.batch, list(args.overrides))["action"] == "alert" else 0
    if args.command == "run":
        from pipelines.training import run_pipeline

        run_pipeline(cfg)
        return 0
    from glasswork.steps import get
    from glasswork.tasks import require_steps

    require_steps(cfg, [args.command])
    result = get(args.command).function()(cfg)
    logging.getLogger("glasswork").info("%s: done %s", args.command, _short(result))
    return 0


def _reproduce(args: argparse.Namespace, cfg) -> int:
    from glasswork.reproduce import URI, reproduce

    match = URI.match(args.uri)
    label = f"{match['name']}-{match['alias'] or 'v' + match['version']}" if match else "invalid"
    workdir = Path(cfg.paths.artifacts_dir).resolve() / "reproduce" / label
    result = reproduce(
        args.uri, cfg.tracking.uri, cfg.tracking.artifact_root, workdir, args.tolerance, Path.cwd().resolve()
    )
    for key, row in result["metrics"].items():
        mark = "ok" if row["within"] else "OUTSIDE"
        figures = f"original {row['original']:.4f}  rebuilt {row['rebuilt']:.4f}  |diff| {row['abs_diff']:.4f}"
        print(f"  {key:10s} {figures}  {mark}")
    verdict = "reproduced" if result["reproduced"] else "NOT reproduced"
    print(f"{result['model']}: {verdict} within {args.tolerance} (new run {result['rebuilt_run_id']}; {workdir})")
    return 0 if result["reproduced"] else 1


def _short(result) -> str:
    text = str(result)
    return text if len(text) < 400 else text[:400] + "…"


def setup_logging(verbose: bool = False) -> None:
    """One readable line per event; silence chatty libraries and, unless ``verbose``, the upstream
    warnings known to be harmless here."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "httpcore", "alembic", "urllib3", "filelock", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if verbose:  # our own debug lines too, and transformers' load report (glasswork.models.backbone)
        logging.getLogger("glasswork").setLevel(logging.DEBUG)
    else:
        quiet_known_warnings()
        # MLflow's "Creating initial MLflow database tables... / Updating database tables" on a new
        # mlflow.db, in its own format through its own handler: routine, and the run's lines say
        # where the store is.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        # Its "Validating input example against model signature" on every model logged: a check
        # that raises when it fails, so the line says nothing when it passes.
        logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    # Lightning logs through its own handler too: without this every line shows twice.
    logging.getLogger("lightning.pytorch").propagate = False
    # Per-file "Loading weights" and "Downloading artifacts" bars on local copies are noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def quiet_known_warnings() -> None:
    """Hide the upstream warnings that open every run and say nothing about it (``-v`` shows them)."""
    # Lightning: its throughput callback's FLOPs hint, a torch pytree deprecation it triggers, and
    # its advert for its own logger service.
    warnings.filterwarnings("ignore", message=".*flops_per_batch.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    # MLflow, when a model is logged with an input example: integer columns could not hold a
    # missing value at serving time. Ours are the processed splits' columns, which have none.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
    # MLflow, on logging a dataset read from a local file: two source classes claim the path and it
    # takes the first; both record the same path.
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
    # transformers 5 asks peft and its own callers to rename a property; nothing of ours calls it.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def prefect_environment() -> None:
    """Defaults for Prefect, set before it is imported (it reads its settings then); what the
    environment already says wins."""
    # Keep its state in the project, its telemetry off (else a "database is locked" traceback
    # from the analytics writer on the temporary server).
    root = Path(os.environ.get("GLASSWORK_ROOT", "."))
    os.environ.setdefault("PREFECT_HOME", str((root / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server is a subprocess that must import Prefect and may first create and
    # migrate its database: on 2 slow, busy cores that can pass Prefect's 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("DO_NOT_TRACK", "true")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``glasswork`` console script; returns the exit code."""
    prefect_environment()
    args = _parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    try:
        return _dispatch(args)
    except GlassworkError as err:
        print(f"glasswork {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as err:
        hint = f": {err}" if str(err) else ""
        print(f"glasswork {args.command}: interrupted (Ctrl-C){hint}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
