#!/usr/bin/env bash
# Copy what a background run has made so far into OUT_DIR (the device's $OUT): the compact
# state of the last snapshot (fp16 G, G_ema and D in files <= 15 MiB, resumable with --resume),
# the log and the newest sample grid. Make every polling call end with it, so that a machine
# lost between calls costs one snapshot interval, not the run.
# Usage: training/collect.sh RUN_DIR OUT_DIR
set -u
run=$1; out=$2
mkdir -p "$out"
[ -d "$run/compact" ] && cp -r "$run/compact" "$out/"
cp "$run/log.jsonl" "$out/" 2>/dev/null
grid=$(ls "$run"/grid-*.png 2>/dev/null | tail -1)
[ -n "$grid" ] && cp "$grid" "$out/"
tail -2 "$run/log.jsonl" 2>/dev/null
