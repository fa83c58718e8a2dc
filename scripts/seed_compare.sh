#!/usr/bin/env bash
# kd vs HF transformers fine-tuning over several seeds on MRPC and RTE (the teacher recipe of
# scripts/teachers.sh), one run at a time. Outputs eval/teachers/seeds/{kd,hf}_TASK_sSEED.json;
# summarise with: python3 scripts/seed_summary.py
# Usage: KD_ASSETS=../shared PY=/path/to/venv/bin/python bash scripts/seed_compare.sh [seeds...]
set -euo pipefail
cd "$(dirname "$0")/.."
A=${KD_ASSETS:-../shared}
PY=${PY:-python3}
KD=${KD:-target/release/kd}
declare -A DIR=([mrpc]=MRPC [rte]=RTE)
RECIPE="--lr 5e-5 --epochs 3 --batch-size 32 --max-seq-len 128 --warmup-ratio 0.1 --weight-decay 0.01"
mkdir -p eval/teachers/seeds checkpoints/seeds
for seed in "${@:-1 2 3}"; do
  for t in mrpc rte; do
    out=eval/teachers/seeds/kd_${t}_s$seed.json
    if [ ! -f "$out" ]; then
      "$KD" finetune --model "$A/models/all-MiniLM-L6-v2" --task $t --data "$A/data/glue/${DIR[$t]}" \
        --out checkpoints/seeds/${t}_s$seed $RECIPE --seed $seed 2>> eval/teachers/seeds/kd_${t}_s$seed.log
      cp checkpoints/seeds/${t}_s$seed/finetune.json "$out"
    fi
    out=eval/teachers/seeds/hf_${t}_s$seed.json
    if [ ! -f "$out" ]; then
      HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" scripts/hf_finetune.py --task $t --data "$A/data/glue/${DIR[$t]}" \
        --model "$A/models/all-MiniLM-L6-v2" $RECIPE --seed $seed --eval-every-epoch --threads 2 \
        --out "$out" 2> eval/teachers/seeds/hf_${t}_s$seed.log
    fi
  done
done
