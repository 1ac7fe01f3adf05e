#!/usr/bin/env bash
# Copy what a background run has made so far into OUT_DIR (the device's $OUT): the compact
# state of the last snapshot (fp16 G, G_ema and D in files <= 15 MiB, resumable with --resume),
# the log and the newest sample grid. Make every polling call end with it, so that a machine
# lost between calls costs one snapshot interval, not the run. The device returns at most
# 8 files per call (LAB_MAX_FILES, see lab/README.md) and this hands back 8 for celeba128:
# anything else needs its own call.
# Usage: lab/collect.sh RUN_DIR OUT_DIR [WAIT_SECONDS]
# WAIT_SECONDS: first wait (at most that long) for the run writing RUN_DIR to end, so that
# the final snapshot comes back. A missing RUN_DIR fails at once: the machine is a fresh one
# (the previous one went back) and waiting would only burn device time.
set -u
run=$1; out=$2; wait_s=${3:-0}
if [ ! -d "$run" ]; then
  echo "collect: $run does not exist (a fresh machine? the run went with the last one)" >&2
  exit 2
fi
# "[t]" keeps pgrep from matching this script's own command line.
while [ "$wait_s" -gt 0 ] && pgrep -f "[t]raining[.]train .*--out $run( |$)" >/dev/null; do
  sleep 5; wait_s=$((wait_s - 5))
done
mkdir -p "$out"
[ -d "$run/compact" ] && cp -r "$run/compact" "$out/"
cp "$run/log.jsonl" "$out/" 2>/dev/null
grid=$(ls "$run"/grid-*.png 2>/dev/null | tail -1)
[ -n "$grid" ] && cp "$grid" "$out/"
tail -2 "$run/log.jsonl" 2>/dev/null
max_files=${LAB_MAX_FILES:-8}  # what one device call returns (lab/README.md)
n=$(find "$out" -type f | wc -l)
[ "$n" -gt "$max_files" ] && echo "collect: $out holds $n files; the device returns at most $max_files per call" >&2
exit 0
