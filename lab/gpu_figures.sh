#!/usr/bin/env bash
# The GPU figures of BENCHMARKS.md, in one command on a CUDA machine (we run it on the
# lent H100, which has PyTorch but no dlib: dlib-based scoring happens afterwards on the
# CPU, see bench/eval_drag.py --stage and lab/README.md). Run it from the checkout's root.
#
#   lab/gpu_figures.sh OUT_DIR [TRAIN_DATA_DIR] [EVAL_FACES_DIR]
#
# 1. the engine's and inversion's CUDA tests (CUDA-graph replay == eager, recapture, NaN recovery);
# 2. drag ms/step at 512 px (FFHQ-512 architecture, random weights) and for the bundled
#    128 px model, eager and CUDA-graph, fp32 and bf16;
# 3. training s/kimg at batch 64 and 128 (needs TRAIN_DATA_DIR with train-*.zip shards);
# 4. inversion s/photo at 512 px (random weights, timing only; needs EVAL_FACES_DIR);
# 5. issue 28's speed table (bench/gpu_speed.py -> OUT_DIR/gpu_speed.json and its profile).
# Everything is logged to OUT_DIR/gpu_figures.log.
set -u
out=$1; data=${2:-}; faces=${3:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$out/gpu_figures.log"
run() { echo "\$ $*" | tee -a "$log"; "$@" 2>&1 | tee -a "$log"; }

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$log"
run python3 -m pytest -q -p no:cacheprovider tests/test_engine_cuda.py tests/test_inversion_cuda.py tests/test_ops.py tests/test_engine.py tests/test_speed_paths.py
# Issue 28's table in one run (512/1024 px step, frame, step+frame; eager/graph; fp32/bf16; fraction of peak;
# PTI at 512 px; a profile), beside the official step when its code is staged in .stage/official (carry it).
official=""; [ -d .stage/official ] && official="--official .stage/official"
run timeout 420 python3 -m bench.gpu_speed --out "$out/gpu_speed.json" $official
for precision in "" "--autocast"; do
  run python3 -m bench.bench_drag --arch ffhq512 --device cuda --handles 1,5 --graph both $precision
done
run python3 -m bench.bench_drag --model celeba128 --feature-block 4 --device cuda --handles 1,5,68 --graph both --autocast
if [ -n "$data" ]; then
  for batch in 64 128; do
    run timeout 300 python3 -m training.train --data "$data" --out /tmp/train_bench --batch $batch --benchmark-iters 30
  done
fi
if [ -n "$faces" ]; then
  run timeout 300 python3 -m bench.bench_inversion --model random:512 --device cuda -n 3 --eval-dir "$faces" \
    --no-extra --no-identity
fi
