#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md and the full-data GPU run, on a GPU worker that has
# torch, Lightning and transformers but no network. Here, first:
#   .venv/bin/python benchmarks/gpu_stage.py                # .gpu/: fp16 model, data, data files, small wheels (~51 MiB)
#   SPLIT=1 BUDGET_MIB=60 bash benchmarks/gpu_wheels.sh     # .whl/ (~60 MiB) + .whl-2/ (~31 MiB): MLflow, Prefect, Evidently, ...
# A device call carries at most 64 MiB, so the folders travel in calls made back to back on the
# same warm machine (it stays warm 30 s; an ignored folder already there stays when a later call
# does not carry it, and /tmp/site keeps what earlier calls installed):
#   1. carry .gpu:    MODE=bench bash benchmarks/run_on_gpu.sh     # GPU tests, explain_cost, train_throughput
#   2. carry .whl-2:  MODE=install WHEELS_DIR=.whl-2 bash benchmarks/run_on_gpu.sh
#   3. carry .whl:    MODE=full bash benchmarks/run_on_gpu.sh      # `glasswork run trainer=gpu`, all 12,808 reviews
#   4. levers as setup variants beside the plain loop, in the same alternated rounds (after call 1
#      carry nothing and add SKIP_INSTALL=1; on a fresh machine carry .gpu). On 2026-11-27 (H200,
#      376 s) this measured batch 1024 at 2.12x, compiled 4.11x, with CUDA graphs 3.22x:
#      SKIP_EXPLAIN=1 SETUPS=plain,glasswork-bucket+b1024+lr4e-4+w3,glasswork-bucket+b1024+lr4e-4+cd+w10,glasswork-bucket+b1024+lr4e-4+cgd+w10 \
#        TAG=_levers bash benchmarks/run_on_gpu.sh
#   5. what compiling costs the whole pipeline (not measured yet): after call 2, carry .whl:
#      MODE=full bash benchmarks/run_on_gpu.sh trainer.compile=true
#      (FSDP_CHECK=1 adds one epoch with trainer=fsdp on the one GPU: fsdp_check.txt)
# Results go to $OUT. SETUPS, ROUNDS, WARMUP and TAG tune the throughput run; SKIP_EXPLAIN=1 skips explain.
# On 2026-11-27 (H200) calls 1-3 took 220 s (SKIP_EXPLAIN=1), 8 s and 137 s, 401 s of device time
# with the machine's start; in a later lease call 4 took 376 s (412 s with the start), call 2 6 s
# and call 3 (FSDP_CHECK=1) 183 s. Keep ROUNDS=2 when a compiled setup is in.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
MODE=${MODE:-bench}
case "$MODE" in
  full) WHEELS=(.whl/*.whl) ;;
  install) WHEELS=("${WHEELS_DIR:?WHEELS_DIR=folder of wheels}"/*.whl) ;;
  *) WHEELS=(.gpu/wheels/*.whl) ;;
esac
# SKIP_INSTALL=1 TRAINER=cpu: a dry run of this script's plumbing on a CPU box with the packages installed.
# No --upgrade: with it, pip moves a wheel's .data/data/ folder over the package folder of the same
# name, and evidently ships its UI assets as .data/data/evidently/...: /tmp/site/evidently would keep
# the assets and lose the code. Without it, pip keeps the first copy of each top-level folder (the
# wheels .gpu/wheels shares with .whl-2 are the same versions) and warns about the rest, unshown here.
# A new set of versions needs a fresh /tmp/site.
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${WHEELS[@]}" \
    2> >(grep -v -e '^WARNING: Target directory /tmp/site/.* already exists' >&2)
fi
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.gpu/pkgs PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_HOME=/tmp/prefect-home
if [ "$MODE" = install ]; then echo "installed ${#WHEELS[@]} wheels from $WHEELS_DIR into /tmp/site"; exit 0; fi
if [ "$MODE" = full ] && [ -z "${SKIP_INSTALL:-}" ]; then bash benchmarks/gpu_wheels.sh --check | tail -5 || echo "the wheel check found problems (above)"; fi
if [ "$MODE" = full ]; then  # the one import the run makes only after training (drift), made now
  # (seconds; the bytecode it writes to /tmp/site serves the run)
  python3 -c "import pandas; from evidently import DataDefinition, Dataset, Report; from evidently.presets import DataDriftPreset; print('evidently imports; pandas', pandas.__version__)"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

if [ "$MODE" = full ]; then
  # The default pipeline with trainer=gpu; the model from .gpu/model (fp16 on disk, trained in fp32 + bf16 autocast).
  ROOT=/tmp/glasswork-gpu; rm -rf "$ROOT"
  start=$(date +%s)
  python3 -m glasswork run trainer="${TRAINER:-gpu}" model.dir="$PWD/.gpu/model" paths.root="$ROOT" "$@" 2>&1 | tee "$OUT/run.log" | grep -v -i warn | tail -40
  echo "glasswork run trainer=${TRAINER:-gpu}: $(( $(date +%s) - start )) s" | tee "$OUT/run_time.txt"
  for step in train evaluate explain drift; do
    cp "$ROOT/artifacts/$step/metrics.json" "$OUT/${step}_metrics.json" 2>/dev/null || true
  done
  cp "$ROOT/artifacts/drift/drift.json" "$ROOT/artifacts/register/registration.json" "$OUT/" 2>/dev/null || true
  python3 - "$ROOT" <<'EOF' | tee "$OUT/mlflow_summary.txt"
import sys
from mlflow.tracking import MlflowClient
root = sys.argv[1]
client = MlflowClient(f"sqlite:///{root}/mlflow.db")
for exp in client.search_experiments():
    for run in client.search_runs([exp.experiment_id]):
        keep = {k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith(("test/", "val/", "throughput/", "train/steps"))}
        print(exp.name, run.info.run_id, run.info.status, keep)
for mv in client.search_model_versions():  # a search leaves aliases out: read each version
    print("version", mv.name, mv.version, "aliases", client.get_model_version(mv.name, mv.version).aliases)
EOF
  if [ -n "${FSDP_CHECK:-}" ]; then
    # trainer=fsdp's GPU path (DTensor shards, bf16 autocast, fused AdamW) on the one GPU: a world
    # of one, so no second process, one epoch on the data the run above prepared. Last: it
    # replaces artifacts/train, copied above.
    python3 -m glasswork train trainer=fsdp trainer.devices=1 trainer.max_epochs=1 model.dir="$PWD/.gpu/model" \
      paths.root="$ROOT" 2>&1 | grep -v -i warn | tail -3 | tee "$OUT/fsdp_check.txt"
  fi
  exit 0
fi

if [ -z "${SKIP_EXPLAIN:-}" ]; then
  GLASSWORK_TEST_MODEL=.gpu/model python3 -m pytest tests/model/test_explain_gpu.py --noconftest -p no:cacheprovider -q \
    > "$OUT/explain_gpu_test.txt" 2>&1 || echo "GPU explain test FAILED (see explain_gpu_test.txt)"
  tail -3 "$OUT/explain_gpu_test.txt"
  python3 benchmarks/explain_cost.py --device cuda --model-dir .gpu/model --texts-file .gpu/texts.json \
    --settings auto 32 none 2>&1 | grep -v -i warn | tee "$OUT/explain_cost.txt"
fi
python3 benchmarks/train_throughput.py --device cuda --data-dir .gpu/data --model-dir .gpu/model \
  --setups "${SETUPS:-plain,same,glasswork,glasswork-bucket}" --rounds "${ROUNDS:-2}" \
  --epochs 3 --batch-size 256 --workers 4 --warmup "${WARMUP:-10}" --json "$OUT/throughput${TAG:-}.json" 2>&1 | tee "$OUT/throughput${TAG:-}.txt"
