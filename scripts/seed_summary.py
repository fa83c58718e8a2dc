#!/usr/bin/env python3
"""Summarise scripts/seed_compare.sh: best dev metric per seed, mean and sd, kd vs HF.

Usage: python3 scripts/seed_summary.py [--dir eval/teachers/seeds] [--teachers eval/teachers]
(prints a markdown table)

The seed-42 pair is the teacher runs of scripts/teachers.sh (eval/teachers/{kd,hf}_TASK.json):
the same recipe and data, so it counts as one more seed. The last columns give the per-seed
differences, their mean and a 95% t-interval of the mean (paired by seed: both sides see the
same seed, but the frameworks' random streams differ, so the pairing only fixes the budget).
"""
import argparse
import json
import statistics
from pathlib import Path

METRIC = {"mrpc": "f1", "rte": "accuracy"}
# Two-sided 97.5% quantiles of Student's t by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="eval/teachers/seeds")
    ap.add_argument("--teachers", default="eval/teachers")
    a = ap.parse_args()
    d, td = Path(a.dir), Path(a.teachers)
    rows = ["| task (metric) | seeds | kd per seed | kd mean ± sd | HF per seed | HF mean ± sd | kd − HF per seed | kd − HF: mean [95% CI] |",
            "|---|---|---|---|---|---|---|---|"]
    for task, metric in METRIC.items():
        vals = {}
        for kind in ("kd", "hf"):
            v = {}
            for f in sorted(d.glob(f"{kind}_{task}_s*.json")):
                seed = int(f.stem.rsplit("_s", 1)[1])
                j = json.loads(f.read_text())
                v[seed] = 100 * (j["best_metric"] if kind == "kd" else j["best"]["metrics"][metric])
            t = td / f"{kind}_{task}.json"
            if t.exists():
                j = json.loads(t.read_text())
                v[42] = 100 * (j["best_metric"] if kind == "kd" else j["best"]["metrics"][metric])
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
        diffs = [vals["kd"][s] - vals["hf"][s] for s in common]
        dm = statistics.mean(diffs)
        if len(diffs) > 1:
            half = T975[len(diffs) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
            ci = f"{dm:+.2f} [{dm - half:+.2f}, {dm + half:+.2f}]"
        else:
            ci = f"{dm:+.2f}"
        seeds = ", ".join(map(str, common))
        dp = " / ".join(f"{x:+.2f}" for x in diffs)
        rows.append(f"| {task.upper()} ({metric}) | {seeds} | {kp} | {km:.2f} ± {ks:.2f} | {hp} | {hm:.2f} ± {hs:.2f} | {dp} | {ci} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
