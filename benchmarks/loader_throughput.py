"""Loader throughput: how many training examples a second the data loader can hand the trainer.

A GPU step of MiniLM on our reviews takes tens of milliseconds (``train_throughput.py``); the
loader must deliver a batch in less, or it sets the pace whatever the model does. Two setups,
each in its own fresh process, rounds alternated:

- ``per-batch``: the usual Hugging Face recipe, and Glasswork's own loader until 2026-11-27:
  every batch is tokenized in the collate function, in every epoch;
- ``glasswork``: each split is tokenized once when its loader is built
  (``TextCollator.encode``); the collate function only pads the token ids.

Both yield the same batches (``tests/data/test_collate.py`` checks it against the tokenizer).
Each process builds the loader (timed: for ``glasswork`` this is the tokenizing), then iterates
``--epochs`` epochs of the training split with ``--workers`` worker processes and nothing else
(no model). Printed per setup: the median examples/s of the epochs after the first (the first
starts the workers), the setup seconds, examples/s over the whole run with the setup included,
and the ratio of that to ``per-batch``.

    .venv/bin/python benchmarks/loader_throughput.py --batch-size 1024 --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ("per-batch", "glasswork")


class Texts(list):
    lengths: list[int]


class PerBatch:
    """The collate function that tokenizes: the baseline (what Glasswork's loader did before)."""

    def __init__(self, tokenizer, max_length: int, pad_to_multiple_of: int | None) -> None:
        self.tokenizer, self.max_length, self.multiple = tokenizer, max_length, pad_to_multiple_of

    def encode(self, frame):
        texts = Texts(zip(frame["text"].astype(str).tolist(), frame["label"].tolist(), strict=True))
        texts.lengths = [len(text) for text, _ in texts]  # length buckets by characters, as before
        return texts

    def __call__(self, items):
        import torch

        texts, labels = zip(*items, strict=True)
        batch = self.tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.max_length,
            pad_to_multiple_of=self.multiple, return_tensors="pt",
        )  # fmt: skip
        labels = torch.tensor(labels, dtype=torch.long)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}


def child(args: argparse.Namespace) -> dict:
    import pandas as pd
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import _model_dir

    from glasswork.data.datamodule import TextCollator, loader

    train = pd.read_parquet(Path(args.data_dir) / "train.parquet")
    tokenizer = AutoTokenizer.from_pretrained(_model_dir(args.model_dir))
    collate_type = TextCollator if args.child == "glasswork" else PerBatch
    start = time.perf_counter()
    batches = loader(
        train, collate_type(tokenizer, 128, 8), args.batch_size, shuffle=True, num_workers=args.workers,
        bucket_by_length=args.bucket,
    )  # fmt: skip
    setup = time.perf_counter() - start
    epochs, examples = [], 0
    for _ in range(args.epochs):
        tick, n = time.perf_counter(), 0
        for batch in batches:
            n += batch["labels"].numel()
        epochs.append(time.perf_counter() - tick)
        examples += n
    steady = statistics.median(n / s for s in epochs[1:]) if len(epochs) > 1 else n / epochs[0]
    return {
        "setup": args.child,
        "setup_s": setup,
        "steady_examples_per_s": steady,
        "examples_per_s": examples / (setup + sum(epochs)),
        "ms_per_batch": 1e3 * args.batch_size / steady,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every setup once, in turn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--bucket", action="store_true", help="length-bucketed batches")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "processed"))
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--json", default=None, help="also write every process's figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    setups = args.setups.split(",")
    if unknown := set(setups) - set(SETUPS):
        parser.error(f"unknown setup(s) {sorted(unknown)}: expected some of {', '.join(SETUPS)}")
    if not (Path(args.data_dir) / "train.parquet").is_file():
        parser.error(f"{args.data_dir}/train.parquet is missing: run `glasswork prepare` first (or pass --data-dir)")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    _report(_rounds(args, setups), setups, args)


def _rounds(args: argparse.Namespace, setups: list[str]) -> list[dict]:
    """Every setup once a round, each in a fresh process, in turn; the figures as they come."""
    results: list[dict] = []
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json") and a != args.json]
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}  # as glasswork sets it
    for round_ in range(args.rounds):
        for setup in setups:
            done = subprocess.run(
                [sys.executable, __file__, *passthrough, "--child", setup], capture_output=True, text=True, env=env
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{setup} failed (round {round_ + 1}):\n{done.stderr[-3000:]}")
            results.append(json.loads(line[7:]) | {"round": round_ + 1})
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
            print(f"round {round_ + 1} {setup:10s} {results[-1]['steady_examples_per_s']:10.0f} examples/s", flush=True)
    return results


def _report(results: list[dict], setups: list[str], args: argparse.Namespace) -> None:
    def median(setup: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["setup"] == setup)

    base = median("per-batch", "examples_per_s") if "per-batch" in setups else None
    print(
        f"\n{results[0]['cpus']} CPUs; batch {args.batch_size}, {args.workers} workers, {args.epochs} epochs; "
        f"medians over {args.rounds} rounds"
    )
    print(f"{'setup':10s} {'ex/s, epochs 2+':>16s} {'ms/batch':>9s} {'setup s':>8s} {'ex/s, all':>10s} "
          f"{'vs per-batch':>13s}")  # fmt: skip
    for setup in setups:
        rate = median(setup, "examples_per_s")
        print(
            f"{setup:10s} {median(setup, 'steady_examples_per_s'):16,.0f} {median(setup, 'ms_per_batch'):9.2f} "
            f"{median(setup, 'setup_s'):8.2f} {rate:10,.0f} {(f'{rate / base:.2f}x' if base else '-'):>13s}"
        )


if __name__ == "__main__":
    main()
