"""Image training throughput: a plain PyTorch loop against Glasswork's image trainer, same model,
same batches.

Setups (each runs in its own fresh process; the rounds alternate them, so no setup inherits
another's compiled kernels, allocator cache or clock state):

- ``plain``: a hand-written loop: the same ``SmallCNN`` (``model=small_cnn``: channels (32, 64),
  hidden 128, dropout 0.25, built after ``torch.manual_seed(seed)`` as the task builds it), AdamW
  with decoupled weight decay on the weights of two or more dimensions only, linear warm-up over
  ``model.warmup_fraction`` of the steps then linear decay, gradient clipping at
  ``trainer.gradient_clip_val`` (by norm, the parameters taken in the order our module clips them),
  cross-entropy on fp32 logits; the whole training subset normalised once, up
  front, then indexed per batch;
- ``glasswork``: what ``glasswork train task=image_classification`` does: the task's own
  ``module()`` (``ClassifierModule``: train accuracy and loss logged every step) and
  ``datamodule()`` (``ImageDataModule``: the images decoded from PNG bytes once, normalised per
  batch with the training split's statistics), on the Trainer of
  ``glasswork.models.trainer.build_trainer`` with the image task's config (``load_config(
  ["task=image_classification", "trainer=cpu"|"trainer=gpu"])``: batch 128, peak rate ``model.lr``
  x ``trainer.lr_scale``, its progress bar refresh, ``log_every_n_steps``, learning-rate monitor,
  throughput callback).

Both read every hyper-parameter from that same composed config, and ``--set KEY=VALUE`` (Hydra
overrides, e.g. ``--set trainer.batch_size=256``) changes it for both. The Trainer logs to a CSV
file in a temporary folder instead of MLflow (same cadence), saves no checkpoints (the plain loop
saves none; the train step keeps the best on validation and one every 200 steps) and runs no
validation (``limit_val_batches=0``; the train step validates once an epoch).

Identical batches: the plain loop draws its batches of indices from a ``DataLoader`` over
``range(n)`` built exactly as ``ImageDataModule`` builds its loader (same batch size,
``shuffle=True``, a ``torch.Generator`` seeded with the config's ``seed``, no workers), so the two
samplers draw the same permutation, epoch after epoch; the pixels are the same uint8 Fashion-MNIST
images (our PNG round trip is lossless) and both normalise with ``channel_stats`` of the training
subset, ``(x / 255 - mean) / std``. Each process hashes every batch it trains on (the float pixels'
bytes and the labels, on the host, before the batch moves to the device; the hashing's time is
left out of the timing) and the report checks that the digests of all setups match. It also
hashes the trained weights: in fp32 on a CPU, ``plain`` and ``glasswork`` end bit for bit alike
(same initial weights, batches, dropout masks and arithmetic), which the report says too.

A setup takes variants after ``+`` signs, so that levers run in the same alternated rounds as
their baseline; each works in both setups alike: ``cl`` (``channels_last`` weights and inputs),
``bf16`` (``trainer.precision=bf16-mixed``: autocast in the plain loop), ``c``
(``trainer.compile=true``: ``torch.compile`` of the network with the config's mode and
``dynamic``), ``w20`` (this setup's untimed steps, ``--warmup`` otherwise) and ``KEY=VALUE`` (a
config override for this setup alone, e.g. ``glasswork+trainer.progress_bar_refresh=25``); e.g.
``--setups plain,glasswork,plain+cl+bf16,glasswork+cl+bf16``. Compiling happens inside the run, so
its cost lands in the timing unless the untimed steps cover every shape (the epoch's last, shorter
batch is a new one without ``dynamic``).

Data: Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist, ``data.idx_dir``): the first
``--train-rows`` images of its training part, and the first ``--test-rows`` of its test part for
the accuracy. Each process trains ``--epochs`` epochs (at most ``--max-steps`` steps each), times
the steps after ``--warmup`` (synchronised on a GPU), then scores the test images. Printed per
setup: median images/s, ms a step, test accuracy, and the ratio of images/s to ``plain``; the last
line is one JSON object of the medians. ``--profile-steps N`` also runs torch.profiler over the
last N steps, which the timing leaves out (see ``train_throughput.py``).

    .venv/bin/python benchmarks/image_train_throughput.py --device cpu --rounds 3 --epochs 1 --train-rows 20000 \
        --test-rows 2000 --warmup 10 --json benchmarks/results/image_train_throughput_cpu.json
    .venv/bin/python benchmarks/image_train_throughput.py --device cpu --threads 1 --set "model.channels=[2]" \
        --set model.hidden=8 --max-steps 157 --setups plain,glasswork,glasswork+trainer.progress_bar_refresh=25
        # a tiny CNN: what is left is the framework's own cost a step
    python benchmarks/image_train_throughput.py --setups plain,glasswork,plain+cl+bf16,glasswork+cl+bf16 \\
        --train-rows 60000 --epochs 2       # on a GPU worker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ("plain", "glasswork")


def variant(setup: str, args: argparse.Namespace) -> tuple[str, argparse.Namespace]:
    """``glasswork+cl+bf16+c+w20`` -> ``("glasswork", args with channels_last, bf16-mixed, compile
    and 20 untimed steps)``; a token with ``=`` is a config override; a ValueError names what is
    not understood."""
    base, *tokens = setup.split("+")
    if base not in SETUPS:
        raise ValueError(f"unknown setup {base!r} in {setup!r}; valid: {', '.join(SETUPS)}")
    out = argparse.Namespace(**vars(args))
    out.channels_last, out.overrides = args.channels_last, list(args.set)
    if args.precision:
        out.overrides.append(f"trainer.precision={args.precision}")
    if args.compile:
        out.overrides.append("trainer.compile=true")
    for token in tokens:
        if token == "cl":
            out.channels_last = True
        elif token == "bf16":
            out.overrides.append("trainer.precision=bf16-mixed")
        elif token == "c":
            out.overrides.append("trainer.compile=true")
        elif token.startswith("w") and token[1:].isdigit():
            out.warmup = int(token[1:])
        elif "=" in token:
            out.overrides.append(token)
        else:
            raise ValueError(f"setup {setup!r}: variant {token!r}: expected cl, bf16, c, w<untimed steps> or KEY=VALUE")
    return base, out


class Clock:
    """The timed window, steps [warmup, end): a time stamp at the start of every step (less the
    time spent hashing batches), so that both the whole window and the median step are known."""

    def __init__(self, warmup: int, end: int, sync) -> None:
        self.warmup, self.end, self.sync = warmup, end, sync
        self.stamps: list[float] = []
        self.cpu: list[float] = []  # this process's CPU time, all its threads
        self.sizes: list[int] = []  # images of each timed step
        self.excluded = self.excluded_cpu = 0.0  # hashing inside the window
        self.digest = hashlib.blake2b(digest_size=16)

    def at_step(self, step: int) -> None:
        if self.warmup <= step <= self.end:
            self.sync()
            self.stamps.append(time.perf_counter() - self.excluded)
            self.cpu.append(time.process_time() - self.excluded_cpu)

    def batch(self, pixels, labels, step: int) -> None:
        """Count and hash one batch, on the host, before it moves to the device."""
        began, began_cpu = time.perf_counter(), time.process_time()
        self.digest.update(pixels.contiguous().numpy().tobytes())
        self.digest.update(labels.numpy().tobytes())
        if self.warmup <= step < self.end:
            self.sizes.append(labels.numel())
        if self.warmup <= step <= self.end:  # the batch of step ``end`` may be hashed before its stamp
            self.excluded += time.perf_counter() - began
            self.excluded_cpu += time.process_time() - began_cpu

    def figures(self) -> dict:
        seconds = self.stamps[-1] - self.stamps[0]
        steps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        full = [t for t, n in zip(steps, self.sizes, strict=True) if n == max(self.sizes)]
        return {
            "images_per_s": sum(self.sizes) / seconds,
            "ms_per_step": 1e3 * seconds / len(steps),
            # A burst of other work on the machine slows some steps, not the median one.
            "median_step_ms": 1e3 * statistics.median(full),
            "median_step_images_per_s": max(self.sizes) / statistics.median(full),
            "slowest_step_ms": 1e3 * max(steps),
            # Time spent waiting for a core does not count here (spinning OpenMP threads do).
            "cpu_ms_per_step": 1e3 * (self.cpu[-1] - self.cpu[0]) / len(steps),
            "hashing_s": self.excluded,
        }


def _config(args: argparse.Namespace):
    from glasswork.config import load_config

    trainer = "trainer=gpu" if args.device == "cuda" else "trainer=cpu"
    return load_config(["task=image_classification", trainer, *args.overrides])


def _data(cfg, args: argparse.Namespace) -> dict:
    """uint8 ``(N, 1, 28, 28)`` pixels and int64 labels of the training and test subsets."""
    import torch

    from glasswork.data.images import FASHION_MNIST_FILES, read_idx

    parts = {}
    for part, (images, labels) in FASHION_MNIST_FILES.items():  # train, then t10k
        x, y = read_idx(Path(cfg.data.idx_dir) / images), read_idx(Path(cfg.data.idx_dir) / labels)
        parts[part] = torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype("int64"))
    (x, y), (x_test, y_test) = parts["train"], parts["t10k"]
    if args.train_rows > len(y) or args.test_rows > len(y_test):
        sys.exit(f"--train-rows/--test-rows: Fashion-MNIST has {len(y)} training and {len(y_test)} test images")
    rows, test = slice(args.train_rows), slice(args.test_rows)
    return {"x": x[rows], "y": y[rows], "x_test": x_test[test], "y_test": y_test[test]}


def child(args: argparse.Namespace) -> dict:
    """One setup, in this process: train, time, score; return the figures."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import StepProfile

    from glasswork.data.image_batches import channel_stats

    name, device = args.child, args.device
    setup, args = variant(name, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _config(args)
    t = cfg.trainer
    torch.set_float32_matmul_precision(t.matmul_precision)
    if t.precision not in ("32-true", "bf16-mixed"):
        sys.exit(f"trainer.precision={t.precision}: this benchmark's plain loop does 32-true and bf16-mixed")
    data = _data(cfg, args)
    n = len(data["y"])
    batches = -(-n // t.batch_size)
    steps_per_epoch = min(batches, args.max_steps or batches)
    total = steps_per_epoch * args.epochs
    gpu = device == "cuda"
    timed_end = total - args.profile_steps
    if timed_end <= args.warmup:
        sys.exit(f"--profile-steps {args.profile_steps} leaves no timed step after --warmup {args.warmup} of {total}")

    def sync() -> None:
        if gpu:
            torch.cuda.synchronize()

    clock = Clock(args.warmup, timed_end, sync)
    profile = StepProfile(timed_end, args.profile_steps, sync)
    mean, std = channel_stats(data["x"])
    run = _plain if setup == "plain" else _glasswork
    net = run(cfg, args, data, steps_per_epoch, clock, profile)
    net = getattr(net, "_orig_mod", net)
    weights = hashlib.blake2b(digest_size=16)
    for tensor in net.state_dict().values():
        weights.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    accuracy = _accuracy(net, data, mean, std, args, t.precision == "bf16-mixed")
    return {
        "setup": name,
        "precision": t.precision,
        "channels_last": args.channels_last,
        "compile": bool(t.compile),
        "batch_size": t.batch_size,
        "lr": cfg.model.lr * t.lr_scale,
        "train_rows": n,
        **clock.figures(),
        "test_accuracy": accuracy,
        "timed_steps": timed_end - args.warmup,
        "batches_digest": clock.digest.hexdigest(),
        "weights_digest": weights.hexdigest(),
        "profile": profile.summary,
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)",
    }


def _plain(cfg, args, data, steps_per_epoch, clock, profile):
    """The hand-written loop; return the trained network."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    from glasswork.data.image_batches import channel_stats
    from glasswork.models.cnn import SmallCNN
    from glasswork.train import class_weights

    t, m, device = cfg.trainer, cfg.model, args.device
    gpu = device == "cuda"
    n = len(data["y"])
    torch.manual_seed(cfg.seed)  # as task.module(): the same initial weights
    net = SmallCNN(10, channels=tuple(m.channels), hidden=m.hidden, dropout=m.dropout).to(device)
    names = {"classes": list(range(10)), "names": [str(c) for c in range(10)]}
    weights = class_weights(t.class_weights, data["y"].numpy(), names)
    weight = torch.tensor(weights, device=device) if weights else None
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=layout).train()
    if t.compile:
        net = torch.compile(net, mode=t.compile_mode, dynamic=t.compile_dynamic)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in channel_stats(data["x"]))
    x, y = (data["x"].float() / 255 - mean) / std, data["y"]  # once, for the whole subset
    # The same sampler as ImageDataModule's loader: same length, batch size, generator and seed.
    order = DataLoader(range(n), t.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": m.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=m.lr * t.lr_scale, fused=gpu)
    # Clipped in the order our module's are, so that the norm's sum runs alike: Lightning clips the
    # optimizer's parameters (its groups' order); with the fused AdamW (on a GPU) ClassifierModule
    # clips them itself, in the network's order.
    params = list(net.parameters()) if gpu else decay + no_decay
    total = steps_per_epoch * args.epochs
    sched = get_linear_schedule_with_warmup(opt, int(m.warmup_fraction * total), total)
    bf16 = t.precision == "bf16-mixed"
    step = 0
    for _ in range(args.epochs):
        for i, index in enumerate(order):
            if i >= steps_per_epoch:
                break
            clock.at_step(step)
            profile.at_step(step)
            inputs, labels = x[index], y[index]
            clock.batch(inputs, labels, step)
            inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=layout)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                logits = net(inputs)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.gradient_clip_val:
                torch.nn.utils.clip_grad_norm_(params, t.gradient_clip_val)
            opt.step()
            sched.step()
            step += 1
    clock.at_step(step)
    profile.at_step(step)
    return net


def _glasswork(cfg, args, data, steps_per_epoch, clock, profile):
    """The train step's task, module, data module and Trainer; return the trained network."""
    import tempfile
    import types

    import lightning as L
    import pandas as pd
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from glasswork import tasks
    from glasswork.data.images import png_bytes
    from glasswork.models.trainer import budget, build_trainer
    from glasswork.train import class_weights

    t = cfg.trainer

    def frame(x, y) -> pd.DataFrame:  # the processed split's form: PNG bytes and labels
        return pd.DataFrame({"image": [png_bytes(a[0].numpy()) for a in x], "label": y.numpy()})

    train_df, val_df = frame(data["x"], data["y"]), frame(data["x_test"], data["y_test"])
    task = tasks.build(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as glasswork.train.train
    labels = {"classes": list(range(10)), "names": [str(c) for c in range(10)]}
    module = task.module(cfg, 10, class_weights(t.class_weights, train_df["label"], labels))
    if args.channels_last:
        module.net = module.net.to(memory_format=torch.channels_last)
    if t.compile:
        module.net = torch.compile(module.net, mode=t.compile_mode, dynamic=t.compile_dynamic)
    datamodule = task.datamodule(cfg, train_df, val_df)

    def before_transfer(self, batch, dataloader_idx):
        clock.batch(batch["pixel_values"], batch["labels"], self.trainer.global_step)  # on the host
        return batch

    def after_transfer(self, batch, dataloader_idx):
        batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
        return batch

    module.on_before_batch_transfer = types.MethodType(before_transfer, module)
    if args.channels_last:
        module.on_after_batch_transfer = types.MethodType(after_transfer, module)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.at_step(trainer.global_step)
            profile.at_step(trainer.global_step)

        def on_train_end(self, trainer, pl_module):
            clock.at_step(trainer.global_step)
            profile.at_step(trainer.global_step)

    folder = Path(tempfile.mkdtemp(prefix="image-throughput-"))
    limits = budget(t, steps_per_epoch) | {
        "max_epochs": args.epochs,
        "max_steps": -1,
        "max_time": None,
        "limit_train_batches": steps_per_epoch,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": not args.no_bar,
    }
    trainer = build_trainer(t, folder / "checkpoints", CSVLogger(folder), **limits)
    for callback in [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]:
        trainer.callbacks.remove(callback)
    trainer.callbacks.append(Timer())
    trainer.fit(module, datamodule=datamodule)
    return module.net


def _accuracy(net, data, mean, std, args, bf16: bool) -> float:
    import torch

    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    device, right = args.device, 0
    net = net.to(device).eval()
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(data["y_test"]), 512):
            x = (data["x_test"][start : start + 512].float() / 255 - mean) / std
            x = x.to(device).contiguous(memory_format=layout)
            right += int((net(x).argmax(-1).cpu() == data["y_test"][start : start + 512]).sum())
    return right / len(data["y_test"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--setups", default="plain,glasswork", help=f"comma-separated, of {'/'.join(SETUPS)}, +variants"
    )
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every setup once, in turn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: the whole subset)")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    parser.add_argument("--train-rows", type=int, default=20000, help="the first N of Fashion-MNIST's training part")
    parser.add_argument("--test-rows", type=int, default=2000, help="the first N of its test part, for the accuracy")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, all setups")
    parser.add_argument("--precision", default=None, help="trainer.precision of every setup (32-true, bf16-mixed)")
    parser.add_argument("--compile", action="store_true", help="trainer.compile=true in every setup")
    parser.add_argument("--channels-last", action="store_true", help="channels_last in every setup")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: its default)")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar in the Glasswork setups")
    parser.add_argument("--profile-steps", type=int, default=0, help="torch.profiler over the last N steps (untimed)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="also write every process's figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    setups = args.setups.split(",")
    for setup in setups:
        try:
            variant(setup, args)
        except ValueError as err:
            parser.error(str(err))
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
            command = [sys.executable, __file__, *passthrough, "--child", setup, "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                print(f"{setup} FAILED (round {round_ + 1}), left out of later rounds:", flush=True)
                print(done.stderr[-3000:], flush=True)
                failed.add(setup)
                continue
            result = json.loads(line[7:]) | {"round": round_ + 1, "load_avg_1min": os.getloadavg()[0]}
            results.append(result)
            if args.json:  # after every process: a run stopped at a time limit keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1))
            print(
                f"round {round_ + 1} {setup:{width}s} {result['images_per_s']:8.1f} images/s "
                f"{result['ms_per_step']:7.2f} ms/step; median step {result['median_step_ms']:7.2f} ms "
                f"({result['median_step_images_per_s']:.1f} images/s); CPU {result['cpu_ms_per_step']:.2f} ms/step  "
                f"acc {result['test_accuracy']:.4f}  "
                f"(load {result['load_avg_1min']:.2f})",
                flush=True,
            )
            if result["profile"]:
                prof = result["profile"]
                host = ", ".join(f"{name} {ms:.2f}" for name, ms, _ in prof["top_host_ms_per_step"][:5])
                print(
                    f"  profile: {prof['wall_ms_per_step']:.1f} ms/step wall, {prof['device_ms_per_step']:.1f} ms "
                    f"on the device, {prof['host_ops_per_step']:.0f} host ops a step; host: {host}",
                    flush=True,
                )
    return results


def _report(results: list[dict], setups: list[str]) -> None:
    def median(setup: str, key: str):
        values = [r[key] for r in results if r["setup"] == setup and r[key] is not None]
        return statistics.median(values) if values else None

    base = median("plain", "images_per_s") if "plain" in setups else None
    base_step = median("plain", "median_step_images_per_s") if "plain" in setups else None
    base_cpu = median("plain", "cpu_ms_per_step") if "plain" in setups else None
    print(f"\ndevice: {results[0]['device']}; medians over {max(r['round'] for r in results)} rounds")
    width = max(18, *map(len, setups))
    print(
        f"{'setup':{width}s} {'precision':11s} {'images/s':>9s} {'ms/step':>8s} {'vs plain':>9s} "
        f"{'median step ms':>15s} {'its images/s':>13s} {'vs plain':>9s} {'CPU ms/step':>12s} {'vs plain':>9s} "
        f"{'test acc':>9s}"
    )
    summary: dict[str, dict] = {}
    for setup in setups:
        mine = [r for r in results if r["setup"] == setup]
        rate, step_rate = median(setup, "images_per_s"), median(setup, "median_step_images_per_s")
        cpu = median(setup, "cpu_ms_per_step")
        print(
            f"{setup:{width}s} {mine[0]['precision']:11s} {rate:9.1f} {median(setup, 'ms_per_step'):8.2f} "
            f"{(f'{rate / base:.3f}x' if base else '-'):>9s} {median(setup, 'median_step_ms'):15.2f} "
            f"{step_rate:13.1f} {(f'{step_rate / base_step:.3f}x' if base_step else '-'):>9s} "
            f"{cpu:12.2f} {(f'{base_cpu / cpu:.3f}x' if base_cpu else '-'):>9s} {median(setup, 'test_accuracy'):9.4f}"
        )
        plain = {r["round"]: r for r in results if r["setup"] == "plain"}

        def pairs(key: str, mine=mine, plain=plain) -> list[float]:
            return [round(r[key] / plain[r["round"]][key], 3) for r in mine if r["round"] in plain]

        summary[setup] = {
            "images_per_s": rate,
            "rounds": [round(r["images_per_s"], 1) for r in mine],
            "vs_plain": rate / base if base else None,
            # Each round's figure over the same round's plain loop: the box's load moves both.
            "vs_plain_by_round": pairs("images_per_s"),
            "median_step_ms": median(setup, "median_step_ms"),
            "median_step_images_per_s": step_rate,
            "median_step_rounds": [round(r["median_step_images_per_s"], 1) for r in mine],
            "median_step_vs_plain": step_rate / base_step if base_step else None,
            "median_step_vs_plain_by_round": pairs("median_step_images_per_s"),
            "cpu_ms_per_step": cpu,
            "cpu_rounds": [round(r["cpu_ms_per_step"], 2) for r in mine],
            "cpu_vs_plain": base_cpu / cpu if base_cpu else None,  # plain's CPU time over this one's
            "cpu_vs_plain_by_round": [round(1 / x, 3) for x in pairs("cpu_ms_per_step")],
            "test_accuracy": median(setup, "test_accuracy"),
        }
    for setup in setups:
        if setup != "plain" and "plain" in setups:
            mine = summary[setup]
            print(
                f"{setup}: vs the same round's plain: {mine['vs_plain_by_round']}; at the median step "
                f"{mine['median_step_vs_plain_by_round']}; in CPU time {mine['cpu_vs_plain_by_round']}"
            )
    # Identical batches: every process of the same batch size hashed the same batches.
    digests: dict[int, set[str]] = {}
    for r in results:
        digests.setdefault(r["batch_size"], set()).add(r["batches_digest"])
    identical = all(len(d) == 1 for d in digests.values())
    print(f"identical batches in every setup and round: {'yes' if identical else 'NO'}")
    # Same trained weights, bit for bit, for each plain+X and glasswork+X pair: the two loops did
    # the same arithmetic (fp32 on a CPU; not to be expected of bf16, compiled or GPU kernels).
    pairs: dict[str, dict[str, set[str]]] = {}
    for r in results:
        base, _, tail = r["setup"].partition("+")
        pairs.setdefault(tail, {}).setdefault(base, set()).add(r["weights_digest"])
    same_weights = {
        f"plain{'+' * bool(tail)}{tail} / glasswork{'+' * bool(tail)}{tail}": len(found["plain"] | found["glasswork"])
        == 1
        for tail, found in pairs.items()
        if len(found) == 2
    }
    for pair, same in same_weights.items():
        print(f"{pair} trained to the same weights, bit for bit: {'yes' if same else 'no'}")
    print(
        json.dumps(
            {
                "device": results[0]["device"],
                "identical_batches": identical,
                "same_weights": same_weights,
                "setups": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
