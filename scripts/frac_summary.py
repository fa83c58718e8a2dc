#!/usr/bin/env python3
"""Summarise eval/private/frac/*.json (scripts/frac_sweep.sh) as a markdown table on stdout:
per model and fractional bits, argmax agreement and logit error against the plaintext model."""
import glob
import json
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "eval/private/frac"
rows = []
for path in glob.glob(os.path.join(root, "*_f*.json")):
    m = re.match(r"(.*)_f(\d+)\.json$", os.path.basename(path))
    d = json.load(open(path))
    mpc = d["mpc"]
    rows.append((m.group(1), int(m.group(2)), d, mpc))
rows.sort(key=lambda r: (r[0], r[1]))
print("| model | frac bits | rows | agreement | max \\|Δlogit\\| | mean \\|Δlogit\\| | metric (private) | metric (plaintext) |")
print("|---|---|---|---|---|---|---|---|")
for name, bits, d, mpc in rows:
    agree = mpc["agreement"]
    n = d.get("examples", "?")
    def metric(x):
        if not isinstance(x, dict):
            return "—"
        return "; ".join(f"{k} {100 * v:.2f}" for k, v in x.items() if isinstance(v, (int, float)))
    print(f"| {name} | {bits} | {n} | {100 * agree:.2f}% | {mpc['max_abs_logit_diff']:.1e} | "
          f"{mpc.get('mean_abs_logit_diff', float('nan')):.1e} | {metric(d.get('metrics'))} | {metric(d.get('plaintext_metrics'))} |")
