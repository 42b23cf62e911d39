"""Drift at scale: Evidently on every row of two 1,000,000-row batches against Glasswork's streamed sample.

Data, built once before any timing: the shipped reviews (``data/raw/rotten_tomatoes.csv``) and
tweets (``data/raw/tweets.csv``), each resampled with replacement to ``--rows`` rows per side, with
the columns ``text``, ``length_chars``, ``length_words`` (defined as in ``text_descriptors``) and
``predicted_probability`` (the trained model's probability of the positive class, scored once per
unique text and cached in ``--cache-dir``: the 35,561 texts took 19 minutes on a busy 2-core CPU).
Each side is a folder of parquet files (row groups of 65,536 rows) in a temporary folder. Scenarios:

- ``tweets``: the reviews (reference) against the tweets (current): drift expected;
- ``held-out``: the unique reviews split into two disjoint random halves, each resampled: no drift
  expected.

Setups, each in its own fresh process (rounds alternate them; ``--setup`` runs one):

- ``plain``: what a user would write: ``pd.read_parquet`` both sides whole, then
  ``build_drift_report`` on the full frames with Evidently's default methods;
- ``glasswork``: ``read_batch`` streams each side and keeps a uniform sample of ``--sample-size``
  rows (with ``predicted_probability`` carried along), ``text_descriptors`` (MiniLM tokenizer) on
  the sample, then the same ``build_drift_report`` on the same 4 columns.

Timed inside the child, from reading the files to the verdict; the imports, the tokenizer and the
interpreter start-up are left out (``process s`` includes them). Peak memory is the child's
``ru_maxrss`` (itself plus its children), start-up included. Goals, per 1M-row comparison:
glasswork <= 30 s and <= 2 GB peak, >= 5x faster than plain, the same dataset-level verdict.

    .venv/bin/python benchmarks/drift_scale.py --rows 20000     # smoke check (first run also scores the texts)
    .venv/bin/python benchmarks/drift_scale.py                  # 1M rows per side; plain takes minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "artifacts" / "train" / "model"
SETUPS = ("plain", "glasswork")
# scenario: (reference side, current side, drift expected)
SCENARIOS = {"tweets": ("reviews", "tweets", True), "held-out": ("reviews-a", "reviews-b", False)}
COLUMNS = ["text", "length_chars", "length_words", "predicted_probability"]
NUMERIC = COLUMNS[1:]
FILE_ROWS, ROW_GROUP = 262_144, 65_536
GOAL_SECONDS, GOAL_MB, GOAL_SPEEDUP, GOAL_ROWS = 30.0, 2048.0, 5.0, 1_000_000


# --- data (built in its own process, so the parent stays small: see `_peak_mb`) ---------------


def _model_key() -> str:
    """Identifies the trained model's files, so that cached scores follow a retrain."""
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in MODEL_DIR.iterdir() if p.is_file())
    return hashlib.sha1(repr(stats).encode()).hexdigest()[:12]


def score_texts(texts: list[str], cache: Path) -> dict[str, float]:
    """The trained model's probability of the positive class for each text; cached in ``cache``
    (saved after each block, so an interrupted first run keeps what it scored)."""
    import pandas as pd

    scores = dict(pd.read_parquet(cache).itertuples(index=False)) if cache.is_file() else {}
    missing = [t for t in dict.fromkeys(texts) if t not in scores]
    if missing:
        from glasswork.models.backbone import load_tokenizer, load_trained
        from glasswork.serving import predict_proba

        model, tokenizer = load_trained(MODEL_DIR), load_tokenizer(MODEL_DIR)
        print(f"scoring {len(missing):,} texts once with {MODEL_DIR} (cached in {cache})", flush=True)
        for start in range(0, len(missing), 4096):
            block = missing[start : start + 4096]
            scores |= zip(block, predict_proba(model, tokenizer, block, progress=True)[:, 1].tolist(), strict=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"text": list(scores), "p": list(scores.values())}).to_parquet(cache)
            print(f"  {min(start + 4096, len(missing)):,} / {len(missing):,}", flush=True)
    return scores


def _unique_texts(path: Path) -> list[str]:
    import pandas as pd

    if not path.is_file():
        sys.exit(f"{path} is missing: run `.venv/bin/glasswork ingest` first")
    texts = pd.read_csv(path, usecols=["text"], keep_default_na=False)["text"].astype(str)
    return sorted(set(texts[texts != ""]))


def write_side(folder: Path, texts: list[str], scores: dict[str, float], rows: int, seed: int) -> None:
    """``rows`` rows drawn with replacement from ``texts``, as parquet files of <= FILE_ROWS rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    unique = np.array(texts, dtype=object)
    features = {
        "length_chars": np.array([len(t) for t in texts], dtype=np.int64),
        "length_words": np.array([len(t.split()) for t in texts], dtype=np.int64),
        "predicted_probability": np.array([scores[t] for t in texts], dtype=np.float64),
    }
    pick = np.random.default_rng(seed).integers(0, len(unique), rows)
    table = pa.table({"text": pa.array(unique[pick], pa.string())} | {k: v[pick] for k, v in features.items()})
    folder.mkdir(parents=True)
    for part, start in enumerate(range(0, rows, FILE_ROWS)):
        pq.write_table(table.slice(start, FILE_ROWS), folder / f"part-{part:03d}.parquet", row_group_size=ROW_GROUP)


def build(out: Path, rows: int, seed: int, cache_dir: Path) -> None:
    """Write the four sides of the two scenarios under ``out``."""
    import numpy as np

    reviews = _unique_texts(ROOT / "data" / "raw" / "rotten_tomatoes.csv")
    tweets = _unique_texts(ROOT / "data" / "raw" / "tweets.csv")
    scores = score_texts(reviews + tweets, cache_dir / f"scores-{_model_key()}.parquet")
    order = np.random.default_rng(seed).permutation(len(reviews))
    half = len(reviews) // 2
    sides = {
        "reviews": reviews,
        "tweets": tweets,
        "reviews-a": [reviews[i] for i in order[:half]],
        "reviews-b": [reviews[i] for i in order[half:]],
    }
    for k, (name, texts) in enumerate(sides.items()):
        write_side(out / name, texts, scores, rows, seed + 1 + k)
        print(f"wrote {name}: {rows:,} rows drawn from {len(texts):,} unique texts", flush=True)


# --- one setup, in the child process ------------------------------------------------------------


def _preload(setup: str) -> object:
    """Import what the setup needs (and, for glasswork, load the tokenizer), outside the timing."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from evidently import Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    from glasswork.drift_report import build_drift_report  # noqa: F401

    if setup == "plain":
        return None
    from glasswork.batch import read_batch  # noqa: F401
    from glasswork.models.backbone import load_tokenizer

    return load_tokenizer(MODEL_DIR)


def plain(reference: Path, current: Path) -> tuple[object, int]:
    import pandas as pd

    from glasswork.drift_report import build_drift_report

    ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
    result = build_drift_report(ref, cur, text_columns=["text"], numerical_columns=NUMERIC)
    return result, len(ref) + len(cur)


def glasswork(reference: Path, current: Path, sample_size: int, seed: int, tokenizer) -> tuple[object, int]:
    import pandas as pd

    from glasswork.batch import read_batch
    from glasswork.drift_report import build_drift_report
    from glasswork.text_descriptors import text_descriptors

    frames, n_rows = [], 0
    for offset, side in enumerate((reference, current)):
        batch = read_batch(
            side, text_column="text", label_column="label", sample_size=sample_size, seed=seed + offset,
            extra=("predicted_probability",),
        )  # fmt: skip
        texts = batch.sample["text"].tolist()
        described = text_descriptors(texts, tokenizer)
        frames.append(pd.DataFrame({"text": texts} | {c: described[c] for c in NUMERIC[:2]}))
        frames[-1]["predicted_probability"] = batch.sample["predicted_probability"].to_numpy()
        n_rows += batch.n_rows
    result = build_drift_report(*frames, text_columns=["text"], numerical_columns=NUMERIC)
    return result, n_rows


def _peak_mb() -> dict[str, float]:
    """ru_maxrss of this process and its children, and the kernel's own high-water mark of this
    process (VmHWM). They differ when ru_maxrss kept the parent's peak across fork + exec."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    status = Path("/proc/self/status").read_text().split("\n")
    hwm = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    return {"peak_mb": (own + children) / 1024, "vmhwm_mb": hwm / 1024}


def child(args: argparse.Namespace) -> dict:
    """Run one setup on one scenario in this process; return its time, memory and verdicts."""
    ref_side, cur_side, _ = SCENARIOS[args.scenario]
    data = Path(args.data_dir)
    tokenizer = _preload(args.setup)
    held_mb = _peak_mb()["vmhwm_mb"]
    start = time.perf_counter()
    if args.setup == "plain":
        result, n_rows = plain(data / ref_side, data / cur_side)
    else:
        result, n_rows = glasswork(data / ref_side, data / cur_side, args.sample_size, args.seed, tokenizer)
    seconds = time.perf_counter() - start
    columns = {name: {k: info[k] for k in ("drifted", "score", "method")} for name, info in result.columns.items()}
    return {
        "setup": args.setup,
        "scenario": args.scenario,
        "seconds": seconds,
        "rows_read": n_rows,
        **_peak_mb(),
        "after_imports_mb": held_mb,
        "dataset_drift": result.dataset_drift,
        "share_drifted": result.share_drifted,
        "columns": columns,
    }


# --- the parent: build, alternate, report --------------------------------------------------------


def _run(command: list[str], what: str, capture: bool) -> str:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=capture, text=True, env=env)
    if done.returncode:
        sys.exit(f"{what} failed (exit {done.returncode}):\n{(done.stderr or '')[-3000:]}")
    return done.stdout or ""


def measure(args: argparse.Namespace, data: Path, setup: str, scenario: str, round_: int) -> dict:
    command = [sys.executable, __file__, "--setup", setup, "--scenario", scenario, "--data-dir", str(data)]
    command += ["--sample-size", str(args.sample_size), "--seed", str(args.seed)]
    started = time.perf_counter()
    out = _run(command, f"{setup} on {scenario} (round {round_})", capture=True)
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{setup} on {scenario} printed no RESULT line:\n{out[-3000:]}")
    result = json.loads(line[7:]) | {"process_seconds": time.perf_counter() - started, "round": round_}
    print(
        f"round {round_} {scenario:9s} {setup:10s} {result['seconds']:8.1f} s  {result['peak_mb']:7.0f} MB peak  "
        f"{'DRIFT' if result['dataset_drift'] else 'no drift'}",
        flush=True,
    )
    return result


def _median(results: list[dict], scenario: str, setup: str, key: str) -> float | None:
    values = [r[key] for r in results if r["scenario"] == scenario and r["setup"] == setup]
    return statistics.median(values) if values else None


def _verdicts(result: dict) -> str:
    cells = [f"{'D' if c['drifted'] else '-'} {c['score']:.3g}" for c in result["columns"].values()]
    return f"{'DRIFT' if result['dataset_drift'] else 'no drift':8s} {result['share_drifted']:5.2f}  " + "  ".join(
        f"{cell:>{max(len(name), 9)}s}" for cell, name in zip(cells, result["columns"], strict=True)
    )


def summarise(results: list[dict], scenario: str) -> dict:
    """Medians, ratios and verdict agreement of one scenario; printed as a table."""
    ref, cur, expected = SCENARIOS[scenario]
    runs = {s: [r for r in results if r["scenario"] == scenario and r["setup"] == s] for s in SETUPS}
    last = {s: runs[s][-1] for s in SETUPS if runs[s]}
    print(f"\n{scenario}: {ref} vs {cur} ({'drift' if expected else 'no drift'} expected)")
    names = list(next(iter(last.values()))["columns"])
    print(f"{'setup':10s} {'work s':>8s} {'process s':>9s} {'peak MB':>8s} {'verdict':8s} {'share':>5s}  "
          + "  ".join(f"{n:>{max(len(n), 9)}s}" for n in names))  # fmt: skip
    for setup, result in last.items():
        print(
            f"{setup:10s} {_median(results, scenario, setup, 'seconds'):8.1f} "
            f"{_median(results, scenario, setup, 'process_seconds'):9.1f} "
            f"{_median(results, scenario, setup, 'peak_mb'):8.0f} {_verdicts(result)}"
        )
    summary: dict = {"expected_drift": expected}
    if len(last) == 2:
        summary |= _compare(results, scenario, runs)
        print(
            f"plain/glasswork: time {summary['time_ratio']:.1f}x, memory {summary['memory_ratio']:.1f}x; "
            f"dataset verdicts {'agree' if summary['dataset_agrees'] else 'DISAGREE'}, "
            f"columns agree {summary['columns_agree']}"
        )
    return summary


def _compare(results: list[dict], scenario: str, runs: dict[str, list[dict]]) -> dict:
    def median(setup: str, key: str) -> float:
        return _median(results, scenario, setup, key) or float("nan")

    pairs = list(zip(runs["plain"], runs["glasswork"], strict=False))
    agree = [sum(p["columns"][c]["drifted"] == g["columns"][c]["drifted"] for c in p["columns"]) for p, g in pairs]
    return {
        "time_ratio": median("plain", "seconds") / median("glasswork", "seconds"),
        "memory_ratio": median("plain", "peak_mb") / median("glasswork", "peak_mb"),
        "glasswork_seconds": median("glasswork", "seconds"),
        "glasswork_peak_mb": median("glasswork", "peak_mb"),
        "dataset_agrees": all(p["dataset_drift"] == g["dataset_drift"] for p, g in pairs),
        "columns_agree": f"{min(agree)}/{len(pairs[0][0]['columns'])}",
    }


def goals(summaries: dict[str, dict], rows: int) -> dict[str, bool]:
    compared = [s for s in summaries.values() if "time_ratio" in s]
    if not compared:
        return {}
    checks = {
        f"glasswork <= {GOAL_SECONDS:.0f} s": all(s["glasswork_seconds"] <= GOAL_SECONDS for s in compared),
        f"glasswork <= {GOAL_MB / 1024:.0f} GB peak": all(s["glasswork_peak_mb"] <= GOAL_MB for s in compared),
        f">= {GOAL_SPEEDUP:.0f}x faster than plain": all(s["time_ratio"] >= GOAL_SPEEDUP for s in compared),
        "verdicts agree": all(s["dataset_agrees"] for s in compared),
    }
    note = "" if rows == GOAL_ROWS else f" (the goals are set for {GOAL_ROWS:,} rows; this run has {rows:,})"
    print(f"\ngoals, per comparison{note}:")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return checks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=GOAL_ROWS, help="rows per side (default: %(default)s)")
    parser.add_argument("--sample-size", type=int, default=5000, help="glasswork's sample per side (%(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="each round runs every setup once, in turn")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated, of %(default)s")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="seeds the resampling, the halves and the samples")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "glasswork-drift-scale"),
                        help="where the model's scores of the unique texts are kept (%(default)s)")  # fmt: skip
    parser.add_argument("--json", default=None, help="default: benchmarks/results/drift_scale-<hostname>.json "
                        "(with -<rows>rows before .json when --rows is not the default)")  # fmt: skip
    parser.add_argument("--setup", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    return parser


def _json_path(args: argparse.Namespace) -> Path:
    if args.json:
        return Path(args.json)
    suffix = "" if args.rows == GOAL_ROWS else f"-{args.rows}rows"
    return ROOT / "benchmarks" / "results" / f"drift_scale-{socket.gethostname()}{suffix}.json"


def run_all(args: argparse.Namespace, data: Path) -> dict:
    setups, scenarios = args.setups.split(","), args.scenarios.split(",")
    started = time.time()
    build = [sys.executable, __file__, "--build", "--data-dir", str(data), "--rows", str(args.rows)]
    _run(build + ["--seed", str(args.seed), "--cache-dir", args.cache_dir], "building the data", capture=False)
    print(f"data built in {time.time() - started:.0f} s; {args.rows:,} rows per side, sample {args.sample_size:,}")
    results = [
        measure(args, data, setup, scenario, round_ + 1)
        for round_ in range(args.rounds)
        for scenario in scenarios
        for setup in setups
    ]
    summaries = {scenario: summarise(results, scenario) for scenario in scenarios}
    return {"summaries": summaries, "goals": goals(summaries, args.rows), "results": results}


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.build:
        build(Path(args.data_dir), args.rows, args.seed, Path(args.cache_dir))
        return
    if args.setup:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    unknown = set(args.setups.split(",")) - set(SETUPS) | set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown setups/scenarios {sorted(unknown)}")
    if not (MODEL_DIR / "config.json").is_file():
        parser.error(f"{MODEL_DIR} is missing: run `make run` first (the trained model scores the texts)")
    with tempfile.TemporaryDirectory(prefix="drift-scale-") as tmp:
        report = run_all(args, Path(tmp))
    report = {
        "host": socket.gethostname(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {name: metadata.version(name) for name in ("evidently", "pandas", "pyarrow", "scikit-learn")},
        **{k: getattr(args, k) for k in ("rows", "sample_size", "rounds", "seed")},
        **report,
    }
    path = _json_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
