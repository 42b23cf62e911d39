#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, in one go on a GPU worker that has torch, lightning and
# transformers (the other packages travel as wheels in .whl/, the model and data in .gpu/):
#   .gpu/model       the packaged MiniLM, weights stored as fp16 (loaded back as fp32)
#   .gpu/data        data/processed/{train,test}.parquet of the default run
#   .gpu/texts.json  the first 32 shipped reviews (explain_cost's batch)
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
if [ -z "${SKIP_EXPLAIN:-}" ]; then
GLASSWORK_TEST_MODEL=.gpu/model python3 -m pytest tests/model/test_explain_gpu.py --noconftest -p no:cacheprovider -q \
  > "$OUT/explain_gpu_test.txt" 2>&1 || echo "GPU explain test FAILED (see explain_gpu_test.txt)"
tail -3 "$OUT/explain_gpu_test.txt"
python3 benchmarks/explain_cost.py --device cuda --model-dir .gpu/model --texts-file .gpu/texts.json \
  --settings auto 32 none 2>&1 | grep -v -i warn | tee "$OUT/explain_cost.txt"
fi
python3 benchmarks/train_throughput.py --device cuda --data-dir .gpu/data --model-dir .gpu/model \
  --setups "${SETUPS:-plain,same,glasswork,glasswork-true,glasswork-compile}" --rounds "${ROUNDS:-2}" \
  --epochs 3 --batch-size 256 --workers 4 --json "$OUT/throughput${TAG:-}.json" 2>&1 | tee "$OUT/throughput${TAG:-}.txt"
