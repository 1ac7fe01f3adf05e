#!/usr/bin/env bash
# Benchmark the training step on this GPU, then start the real run in the background
# (setsid: it survives the end of the calling command). Used for the device runs; run it from
# the checkout's root (see lab/README.md).
# Usage: lab/launch_gpu.sh DATA_GLOB RUN_DIR MAX_MINUTES [extra train args...]
# SKIP_BENCH=1 starts the run at once (the benchmarks take up to 6 minutes of a short lease).
# Poll it with calls that end in `lab/collect.sh RUN_DIR $OUT` (every snapshot comes back).
set -u
data_glob=$1; run=$2; minutes=$3; shift 3
mkdir -p /root/data "$run"
for f in $data_glob; do ln -sf "$PWD/$f" /root/data/; done
export PYTHONUNBUFFERED=1
bench="python3 -m training.train --data /root/data --out /root/bench --batch 64 --benchmark-iters 30 --cache-dir /root/cache"
best_flags=""; best=1e9
[ "${SKIP_BENCH:-0}" = 1 ] && bench_variants=() || bench_variants=("" "--channels-last")
for flags in "${bench_variants[@]}"; do
  s=$(timeout 120 $bench $flags "$@" 2>&1 | grep '"benchmark"' | tee -a "$run/bench.jsonl" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["sec_per_kimg"])' 2>/dev/null)
  echo "flags='$flags' sec/kimg=$s"
  if [ -n "$s" ] && python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then best=$s; best_flags=$flags; fi
done
[ "${SKIP_BENCH:-0}" = 1 ] || timeout 120 $bench --pl-weight 2 "$@" 2>&1 | grep '"benchmark"' | tee -a "$run/bench.jsonl"
echo "starting with flags '$best_flags'"
setsid nohup python3 -m training.train --data /root/data --out "$run" --batch 64 --kimg 5000 --max-minutes "$minutes" \
  --cache-dir /root/cache --tick-kimg 10 --snap-kimg 50 $best_flags "$@" > "$run/stdout.log" 2>&1 < /dev/null &
sleep 45; tail -5 "$run/stdout.log"
