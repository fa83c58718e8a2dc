#!/usr/bin/env bash
# Private-inference benchmarks on a quiet machine: every other `kd` job (training, evaluation,
# parties) is paused with SIGSTOP for the duration and resumed afterwards (also on failure or
# Ctrl-C), so the two cores run only the benchmark. Writes eval/private/bench.json/.md (the full
# variant matrix) and a second run of the seq-128 rows of the CrypTen comparison.
#   bash scripts/bench_quiet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KD=${KD:-target/release/kd}
cargo build --release --quiet
pids=$(pgrep -f "kd[^ ]* (train|finetune|private-eval|eval|party|query)" || true)
resume() { [ -n "$pids" ] && kill -CONT $pids 2>/dev/null || true; }
trap resume EXIT
# A paused job keeps its memory: next to the base-512 rows (~10 GB) a paused IMDb distillation
# (~12 GB) is enough for the kernel's OOM killer. Refuse rather than lose the job.
held_kb=0
for p in $pids; do held_kb=$((held_kb + $(ps -o rss= -p "$p" 2>/dev/null || echo 0))); done
if [ "$held_kb" -gt $((8 * 1024 * 1024)) ] && [ -z "${BENCH_FORCE:-}" ]; then
  echo "error: the jobs to pause hold $((held_kb / 1024)) MB of memory; the seq-512 rows need ~10 GB (BENCH_FORCE=1 to run anyway)" >&2
  trap - EXIT
  exit 1
fi
[ -n "$pids" ] && kill -STOP $pids
sleep 2
"$KD" bench private --preset tiny,mini,base --seq-len 128,512 \
  --variants gelu+softmax,quad+softmax,gelu+2quad,quad+2relu,quad+2quad \
  --out eval/private/bench.json --markdown
"$KD" bench private --preset mini,base --seq-len 128 --variants gelu+softmax,quad+2quad \
  --out eval/private/bench_quiet_128_run2.json
