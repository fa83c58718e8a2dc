#!/usr/bin/env bash
# The README's main job on a small budget: teacher fine-tuning on a 2,000-row SST-2 slice,
# two-stage distillation into a Quad+2Quad student, and plaintext evaluation of both on the
# full SST-2 dev set. Every step resumes if interrupted (rerun the script).
set -euo pipefail
cd "$(dirname "$0")/.."
export KD_ASSETS="${KD_ASSETS:-$(cd .. && pwd)/shared}"
kd=target/release/kd
data="$KD_ASSETS/data/glue/SST-2"
$kd finetune --model "$KD_ASSETS/models/all-MiniLM-L6-v2" --task sst2 --data "$data" \
  --out checkpoints/sst2-demo --epochs 1 --limit-train 2000
$kd train --recipe recipes/sst2-demo.toml
$kd eval --model checkpoints/sst2-demo --task sst2 --data "$data" --output eval/sst2-demo.json
$kd eval --model checkpoints/sst2-demo-quad-2quad --task sst2 --data "$data" --output eval/sst2-demo-quad-2quad.json
