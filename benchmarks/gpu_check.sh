#!/usr/bin/env bash
# One command on a CUDA machine, from the source tree (nothing to install but torch/torchvision/numpy/pillow/tqdm):
#
#   PYTHONPATH=src bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. the GPU tests (the packed loader's CUDA path equals its CPU path), 2. `alexnet bench` eager bf16 channels-last
# at batch 256, 3. the same with torch.compile at batch 1024. Tables go to stdout, JSON + text to OUT_DIR.
set -euo pipefail
OUT=${1:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
WORKERS=$(nproc)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$OUT/gpu.txt"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_packed.py 2>&1 | tee "$OUT/gpu_tests.txt"
COMMON=(--device cuda --precision bf16 --channels-last --image-size 224 --workers "$WORKERS" --synthetic-images 4096)
python -m alexnet bench "${COMMON[@]}" --batch-size 256 --steps 20 --repeats 3 \
  --json "$OUT/bench_eager_b256.json" 2>&1 | tee "$OUT/bench_eager_b256.txt"
python -m alexnet bench "${COMMON[@]}" --batch-size 1024 --steps 10 --repeats 3 --compile \
  --json "$OUT/bench_compile_b1024.json" 2>&1 | tee "$OUT/bench_compile_b1024.txt"
