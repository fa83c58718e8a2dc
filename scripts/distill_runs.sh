#!/usr/bin/env bash
# Run `kd train` recipes one after another (each resumes if interrupted; finished runs are
# skipped quickly), logging to checkpoints/students/NAME.log.
#   bash scripts/distill_runs.sh recipes/mrpc-quad-2quad.toml recipes/rte-quad-2quad.toml ...
# Without arguments: the Table-2 set in priority order.
set -euo pipefail
cd "$(dirname "$0")/.."
export KD_ASSETS="${KD_ASSETS:-$(cd .. && pwd)/shared}"
KD="${KD:-target/release/kd}"
recipes=("$@")
if [ ${#recipes[@]} -eq 0 ]; then
  # Student and its "w/o d" baseline task by task, cheapest tasks first.
  for t in mrpc rte stsb cola; do recipes+=("recipes/$t-quad-2quad.toml" "recipes/$t-quad-2quad-wod.toml"); done
  recipes+=(recipes/mrpc-quad-2quad-3l.toml recipes/sst2-quad-2quad.toml recipes/sst2-quad-2quad-wod.toml)
  for t in mrpc rte stsb cola sst2; do recipes+=("recipes/$t-quad-2relu.toml" "recipes/$t-quad-2relu-wod.toml"); done
  recipes+=(recipes/mrpc-quad-2quad-wopd.toml)
fi
mkdir -p checkpoints/students
for r in "${recipes[@]}"; do
  name=$(basename "$r" .toml)
  echo "== $name $(date -u +%FT%TZ)"
  /usr/bin/time -v "$KD" train --recipe "$r" >>"checkpoints/students/$name.log" 2>&1 \
    || echo "!! $name failed (see checkpoints/students/$name.log)"
  tail -n 1 "checkpoints/students/$name.log"
done
