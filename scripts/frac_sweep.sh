#!/usr/bin/env bash
# Fixed-point precision sweep under MPC: the same seeded dev subset at several fractional-bit
# settings, one JSON per (model, bits) in eval/private/frac/, summarised by frac_summary.py.
#   bash scripts/frac_sweep.sh NAME MODEL_DIR TASK DATA_DIR ROWS "12 14 16 18 20"
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 model=$2 task=$3 data=$4 rows=$5 bits=${6:-"12 14 16 18 20"}
mkdir -p eval/private/frac
for f in $bits; do
  out=eval/private/frac/${name}_f${f}.json
  [ -f "$out" ] && { echo "skip $out"; continue; }
  target/release/kd private-eval --model "$model" --task "$task" --data "$data" \
    --sample "$rows" --sample-seed 0 --frac-bits "$f" --no-results --output "$out"
done
