#!/usr/bin/env bash
# The measurements that need the machine to themselves, in one go: every running `kd train` and
# `kd private-eval` job is paused (SIGSTOP) for the duration and resumed afterwards (also on
# failure or Ctrl-C). Runs the deployment measurements of eval/party (scripts/netem.sh for
# BERT-mini, the distilled MRPC student and BERT-base; needs root), then the private benchmark
# matrix (scripts/bench_quiet.sh).
#   KD_ASSETS=../shared bash scripts/quiet_measure.sh [STUDENT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STUDENT=${1:-checkpoints/students/mrpc-quad-2quad}
cargo build --release --quiet && cargo build --release --quiet --example delay_relay
pids=$(pgrep -f "kd (train|finetune|private-eval)" || true)
resume() { [ -n "$pids" ] && kill -CONT $pids 2>/dev/null || true; }
trap resume EXIT
[ -n "$pids" ] && kill -STOP $pids
sleep 2
scripts/netem.sh eval/party bert-mini preset:mini
scripts/netem.sh eval/party minilm-student-mrpc "$(cd "$STUDENT" && pwd)"
scripts/netem.sh eval/party bert-base preset:base
python3 scripts/party_table.py eval/party
bash scripts/bench_quiet.sh
