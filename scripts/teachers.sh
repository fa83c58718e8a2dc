#!/usr/bin/env bash
# Fine-tune the all-MiniLM-L6-v2 teachers with `kd finetune` and, for MRPC and RTE, the same
# recipe in HF transformers (scripts/hf_finetune.py), one run at a time on this machine.
# Recipe (paper's teacher recipe, MPCFormer spec §2.4): AdamW lr 5e-5, batch 32, 3 epochs,
# seq 128, warmup 10%, weight decay 0.01, clip 1.0, seed 42, dev eval each epoch, best kept.
# Usage: KD_ASSETS=../shared PY=/path/to/venv/bin/python bash scripts/teachers.sh [kind:task ...]
# (e.g. kd:imdb; IMDb uses its own budget, below).
set -euo pipefail
A=${KD_ASSETS:-../shared}
PY=${PY:-python3}
KD=${KD:-target/release/kd}
declare -A DIR=([sst2]=SST-2 [mrpc]=MRPC [rte]=RTE [stsb]=STS-B [cola]=CoLA)
RECIPE="--lr 5e-5 --epochs 3 --batch-size 32 --max-seq-len 128 --warmup-ratio 0.1 --weight-decay 0.01 --seed 42"
mkdir -p eval/teachers
for job in "${@:-kd:mrpc hf:mrpc kd:rte hf:rte kd:cola kd:stsb kd:sst2}"; do
  for j in $job; do
    kind=${j%%:*}; t=${j#*:}
    # SST-2 has 2,105 steps per epoch: evaluate and checkpoint every 500 steps as well.
    extra=""; [ "$t" = sst2 ] && extra="--eval-every 500"
    if [ "$kind" = kd ] && [ "$t" = imdb ]; then
      # IMDb at seq 256 on a seeded 4,000-review sample (the files are sorted by label), dev =
      # 1,000 sampled test reviews: the longest length and size a 2-core budget allows.
      /usr/bin/time -v "$KD" finetune --model "$A/models/all-MiniLM-L6-v2" --task imdb --data "$A/data/imdb" \
        --out checkpoints/teachers/imdb --lr 5e-5 --epochs 2 --batch-size 16 --max-seq-len 256 \
        --warmup-ratio 0.1 --weight-decay 0.01 --seed 42 --sample-train 4000 --sample-dev 1000 --eval-every 125 \
        2>> eval/teachers/kd_imdb.log
      cp checkpoints/teachers/imdb/finetune.json eval/teachers/kd_imdb.json
      cp checkpoints/teachers/imdb/log.csv eval/teachers/kd_imdb_log.csv
    elif [ "$kind" = kd ]; then
      /usr/bin/time -v "$KD" finetune --model "$A/models/all-MiniLM-L6-v2" --task "$t" \
        --data "$A/data/glue/${DIR[$t]}" --out "checkpoints/teachers/$t" $RECIPE $extra \
        2>> "eval/teachers/kd_$t.log"
      cp "checkpoints/teachers/$t/finetune.json" "eval/teachers/kd_$t.json"
      cp "checkpoints/teachers/$t/log.csv" "eval/teachers/kd_${t}_log.csv"
    else
      HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /usr/bin/time -v "$PY" scripts/hf_finetune.py --task "$t" \
        --data "$A/data/glue/${DIR[$t]}" --model "$A/models/all-MiniLM-L6-v2" $RECIPE \
        --eval-every-epoch --threads 2 --out "eval/teachers/hf_$t.json" 2> "eval/teachers/hf_$t.log"
    fi
  done
done
