#!/usr/bin/env bash
# The device call carries the working tree, tracked files included, within 64 MiB; the training resume
# state (34 MB), docs/ and bench/results/ alone make the checkout 78 MB. Park them outside the checkout
# for the calls, and bring them back before committing (git sees them as deleted while parked).
#
#   lab/park.sh out [PLACE]   # before device calls (PLACE defaults to ../parked); prints what will travel
#   lab/park.sh in  [PLACE]   # afterwards
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
place=${2:-../parked}
paths=(checkpoints/celeba128/resume docs bench/results)
case "${1:-}" in
  out)
    for p in "${paths[@]}"; do
      [ -e "$p" ] || continue
      mkdir -p "$place/$(dirname "$p")"
      [ -e "$place/$p" ] && { echo "$place/$p exists already: bring it back first (lab/park.sh in)" >&2; exit 1; }
      mv "$p" "$place/$p"
    done
    bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1 || true)
    echo "the working tree that travels: $((bytes / 1048576)) MiB (+ what carry names; 64 MiB in all)";;
  in)
    for p in "${paths[@]}"; do
      [ -e "$place/$p" ] || continue
      [ -e "$p" ] && { echo "$p exists in the checkout: merge $place/$p by hand" >&2; exit 1; }
      mkdir -p "$(dirname "$p")"
      mv "$place/$p" "$p"
    done
    git status --short | head;;
  *) echo "usage: lab/park.sh out|in [PLACE]" >&2; exit 2;;
esac
