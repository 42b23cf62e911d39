"""Fine-tuning throughput of a generative model: a plain PyTorch loop against what ``glasswork
train task=text_generation`` does, same model, same batches, tokens a second.

Setups (each in its own fresh process; the rounds alternate them, so that no setup inherits
another's allocator cache or clock state):

- ``plain``: a hand-written loop: SmolLM2-135M-Instruct from its GGUF (``model=smollm2``) with
  LoRA adapters (``add_lora``, built after ``torch.manual_seed(seed)`` as the task builds them),
  AdamW over the adapters only, weight decay on the parameters of two or more dimensions, linear
  warm-up over ``model.warmup_fraction`` of the steps then linear decay, gradient clipping by norm
  at ``trainer.gradient_clip_val``, Hugging Face's causal LM loss from ``labels``;
- ``glasswork``: the task's own ``module()`` (``CausalLMModule``, its loss logged on the steps the
  logger writes) on the Trainer of ``glasswork.models.trainer.build_trainer`` with the task's
  trainer config (progress bar, ``log_every_n_steps``, learning-rate monitor, throughput callback),
  a CSV logger in a temporary folder instead of MLflow, no checkpoints and no validation (the
  plain loop has neither).

Both iterate the same ``PromptDataModule`` train loader (the pairs encoded once in the chat
template, the response's tokens the only targets, right-padded batches, the order seeded by
``seed``), so the batches are identical by construction; each process hashes them anyway, and
hashes the trained adapters: in fp32 on a CPU the two loops end bit for bit alike. Data: the
shipped reviews as questions (``data=instructions``), the first ``--rows`` pairs.

The model keeps its first ``--layers`` of 30 decoder blocks (all 30 cost minutes a setup on two
CPU cores; the blocks are alike, so the ratio is the point); loading the GGUF (a minute) is left out
of the timing, as are the first ``--warmup`` steps. Tokens a second count the batch's real tokens
(its attention mask), prompt and response. Printed per setup: median tokens/s and ms a step, the
ratio to ``plain`` (overall and per round); the last line is one JSON object.

    .venv/bin/python benchmarks/generation_train_throughput.py --rounds 3 \\
        --json benchmarks/results/generation_train_throughput_cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ("plain", "glasswork")


class Clock:
    """Time stamps at the start of steps [warmup, end], the real tokens of the timed steps, and a
    digest of every batch (hashed on the host; the hashing's time is left out)."""

    def __init__(self, warmup: int, end: int) -> None:
        self.warmup, self.end = warmup, end
        self.stamps: list[float] = []
        self.tokens: list[int] = []
        self.excluded = 0.0
        self.digest = hashlib.blake2b(digest_size=16)

    def at_step(self, step: int) -> None:
        if self.warmup <= step <= self.end:
            self.stamps.append(time.perf_counter() - self.excluded)

    def batch(self, batch: dict, step: int) -> None:
        began = time.perf_counter()
        for key in ("input_ids", "attention_mask", "labels"):
            self.digest.update(batch[key].numpy().tobytes())
        if self.warmup <= step < self.end:
            self.tokens.append(int(batch["attention_mask"].sum()))
        if self.warmup <= step <= self.end:
            self.excluded += time.perf_counter() - began

    def figures(self) -> dict:
        seconds = self.stamps[-1] - self.stamps[0]
        steps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return {
            "tokens_per_s": sum(self.tokens) / seconds,
            "ms_per_step": 1e3 * seconds / len(steps),
            "median_step_ms": 1e3 * statistics.median(steps),
            "timed_steps": len(steps),
        }


def _setup(args):
    """The task's config, its data module over the first ``--rows`` pairs, and the number of steps."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "src"))
    from glasswork import tasks
    from glasswork.config import load_config
    from glasswork.data.prompt_batches import PromptDataModule
    from glasswork.data.prompts import instruction_set
    from glasswork.data.sources import rotten_tomatoes

    cfg = load_config(["task=text_generation", *args.set])
    pairs = instruction_set(rotten_tomatoes().head(args.rows))
    task = tasks.build(cfg)
    t = cfg.trainer
    data = PromptDataModule(
        pairs,
        pd.DataFrame(columns=["prompt", "response"]),
        task._tokenizer,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        max_length=cfg.model.max_length,
        truncation=cfg.data.truncation,
        seed=cfg.seed,
    )
    steps = min(args.steps, len(data.train_dataloader()))
    return cfg, task, data, steps


def _cut(net, layers: int):
    """Keep the first ``layers`` decoder blocks (of the peft-wrapped or the plain model)."""
    inner = net.get_base_model() if hasattr(net, "get_base_model") else net
    inner.model.layers = inner.model.layers[:layers]
    inner.config.num_hidden_layers = layers
    return net


def _plain(cfg, task, data, steps: int, clock: Clock, args):
    import lightning as L
    import torch
    from transformers import get_linear_schedule_with_warmup

    from glasswork.models.causal_lm import add_lora, load_model

    t, m = cfg.trainer, cfg.model
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as glasswork.train.train
    torch.manual_seed(cfg.seed)  # as task.module(): the same adapters' initial weights
    net = _cut(add_lora(load_model(m), m.lora), args.layers).train()
    trained = [p for p in net.parameters() if p.requires_grad]
    decay, no_decay = [p for p in trained if p.ndim >= 2], [p for p in trained if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": m.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=m.lr * t.lr_scale)
    sched = get_linear_schedule_with_warmup(opt, int(m.warmup_fraction * steps), steps)
    for step, batch in enumerate(data.train_dataloader()):
        if step >= steps:
            break
        clock.at_step(step)
        clock.batch(batch, step)
        loss = net(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(decay + no_decay, t.gradient_clip_val)
        opt.step()
        sched.step()
    clock.at_step(steps)
    return net


def _glasswork(cfg, task, data, steps: int, clock: Clock, args):
    import types

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from glasswork.models.trainer import budget, build_trainer

    t = cfg.trainer
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as glasswork.train.train
    module = task.module(cfg, 2)
    module.net = _cut(module.net, args.layers)

    def before_transfer(self, batch, dataloader_idx):
        clock.batch(batch, self.trainer.global_step)  # on the host
        return batch

    module.on_before_batch_transfer = types.MethodType(before_transfer, module)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.at_step(trainer.global_step)

        def on_train_end(self, trainer, pl_module):
            clock.at_step(trainer.global_step)

    folder = Path(tempfile.mkdtemp(prefix="generation-throughput-"))
    limits = budget(t, steps) | {
        "max_epochs": 1,
        "max_steps": -1,
        "max_time": None,
        "limit_train_batches": steps,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    trainer = build_trainer(t, folder / "checkpoints", CSVLogger(folder), task.checkpoint_on, **limits)
    for callback in [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]:
        trainer.callbacks.remove(callback)
    trainer.callbacks.append(Timer())
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return module.net


def child(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, task, data, steps = _setup(args)
    if steps <= args.warmup + 1:
        sys.exit(f"--steps {args.steps} ({steps} batches of --rows {args.rows}) leaves no timed step after --warmup")
    clock = Clock(args.warmup, steps)
    run = _plain if args.child == "plain" else _glasswork
    net = run(cfg, task, data, steps, clock, args)
    weights = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(net.state_dict().items()):
        if "lora_" in name:
            weights.update(tensor.detach().float().contiguous().numpy().tobytes())
    return {
        "setup": args.child,
        "batch_size": cfg.trainer.batch_size,
        "layers": args.layers,
        "steps": steps,
        **clock.figures(),
        "batches_digest": clock.digest.hexdigest(),
        "adapters_digest": weights.hexdigest(),
        "device": f"CPU ({torch.get_num_threads()} threads)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="plain,glasswork", help=f"comma-separated, of {'/'.join(SETUPS)}")
    parser.add_argument("--rounds", type=int, default=3, help="each round runs every setup once, in turn")
    parser.add_argument("--rows", type=int, default=400, help="the first N reviews, as questions")
    parser.add_argument("--steps", type=int, default=30, help="training steps (batches of trainer.batch_size)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--layers", type=int, default=6, help="decoder blocks kept, of SmolLM2's 30")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: its default)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, all setups")
    parser.add_argument("--json", default=None, help="also write every process's figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    setups = args.setups.split(",")
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup(s) {unknown}; valid: {', '.join(SETUPS)}")
    results = _rounds(args, setups)
    _report(results, setups)


def _rounds(args, setups: list[str]) -> list[dict]:
    results: list[dict] = []
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json") and a != args.json]
    for round_ in range(args.rounds):
        for setup in setups:
            command = [sys.executable, __file__, *passthrough, "--child", setup]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{setup} failed (round {round_ + 1}):\n{done.stderr[-3000:]}")
            result = json.loads(line[7:]) | {"round": round_ + 1, "load_avg_1min": os.getloadavg()[0]}
            results.append(result)
            if args.json:  # after every process: a run stopped at a time limit keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1))
            print(
                f"round {round_ + 1} {setup:10s} {result['tokens_per_s']:8.1f} tokens/s {result['ms_per_step']:8.1f} "
                f"ms/step; median step {result['median_step_ms']:8.1f} ms (load {result['load_avg_1min']:.2f})",
                flush=True,
            )
    return results


def _report(results: list[dict], setups: list[str]) -> None:
    def median(setup: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["setup"] == setup)

    plain = {r["round"]: r for r in results if r["setup"] == "plain"}
    print(f"\ndevice: {results[0]['device']}; {results[0]['layers']} of 30 blocks; medians over the rounds")
    summary = {}
    for setup in setups:
        rate = median(setup, "tokens_per_s")
        by_round = [round(r["tokens_per_s"] / plain[r["round"]]["tokens_per_s"], 3) for r in results
                    if r["setup"] == setup and r["round"] in plain]  # fmt: skip
        ratio = rate / median("plain", "tokens_per_s") if plain else None
        summary[setup] = {"tokens_per_s": rate, "median_step_ms": median(setup, "median_step_ms"),
                          "vs_plain": ratio, "vs_plain_by_round": by_round}  # fmt: skip
        print(f"{setup:10s} {rate:8.1f} tokens/s; vs plain {ratio and f'{ratio:.3f}x'}; by round {by_round}")
    identical = len({r["batches_digest"] for r in results}) == 1
    same = len({r["adapters_digest"] for r in results}) == 1
    print(f"identical batches in every setup and round: {'yes' if identical else 'NO'}")
    print(f"every process trained the same adapters, bit for bit: {'yes' if same else 'no'}")
    print(json.dumps({"device": results[0]["device"], "identical_batches": identical, "same_adapters": same,
                      "setups": summary}))  # fmt: skip


if __name__ == "__main__":
    main()
