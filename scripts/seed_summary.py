#!/usr/bin/env python3
"""Summarise scripts/seed_compare.sh: best dev metric per seed, mean and sd, kd vs HF.

Usage: python3 scripts/seed_summary.py [--dir eval/teachers/seeds]  (prints a markdown table)
"""
import argparse
import json
import statistics
from pathlib import Path

METRIC = {"mrpc": "f1", "rte": "accuracy"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="eval/teachers/seeds")
    d = Path(ap.parse_args().dir)
    rows = ["| task (metric) | kd per seed | kd mean ± sd | HF per seed | HF mean ± sd | kd − HF (means) |",
            "|---|---|---|---|---|---|"]
    for task, metric in METRIC.items():
        vals = {}
        for kind in ("kd", "hf"):
            v = {}
            for f in sorted(d.glob(f"{kind}_{task}_s*.json")):
                seed = int(f.stem.rsplit("_s", 1)[1])
                j = json.loads(f.read_text())
                v[seed] = 100 * (j["best_metric"] if kind == "kd" else j["best"]["metrics"][metric])
            vals[kind] = v
        common = sorted(set(vals["kd"]) & set(vals["hf"]))
        if not common:
            continue

        def fmt(v):
            xs = [v[s] for s in common]
            sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
            return " / ".join(f"{x:.2f}" for x in xs), statistics.mean(xs), sd

        kp, km, ks = fmt(vals["kd"])
        hp, hm, hs = fmt(vals["hf"])
        rows.append(f"| {task.upper()} ({metric}), seeds {common} | {kp} | {km:.2f} ± {ks:.2f} | {hp} | {hm:.2f} ± {hs:.2f} | {km - hm:+.2f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
