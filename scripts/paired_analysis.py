#!/usr/bin/env python3
"""Paired student-vs-teacher analysis of dev predictions (why a task misses the 98% target).

For each task with a teacher and a student predictions CSV (`kd eval`/`kd private-eval
--predictions`, same dev rows in the same order) this prints and writes:
  - both metrics and the student/teacher ratio;
  - agreement, and the flips split into teacher-right -> student-wrong and the reverse;
  - how far one flipped row moves the metric (the mean |change| over single-row flips of the
    teacher's own predictions): the 2% allowance expressed in rows;
  - a paired bootstrap (same resampled rows for both models) of the ratio: its 90% interval;
  - the teacher's logit margin |z1 - z0| on flipped vs kept rows (classification only).
Pure Python (no numpy), seeded.

    python3 scripts/paired_analysis.py > eval/distill/paired_analysis.md
"""
import csv
import json
import math
import random
import sys

from glue_common import PRIMARY_METRIC, compute_metrics

PAIRS = [
    # task (its GLUE metric), teacher CSV, student label, student CSV
    ("cola", "eval/private/teachers/cola_predictions.csv", "Quad+2Quad", "eval/distill/private_cola-quad-2quad.csv"),
    ("cola", "eval/private/teachers/cola_predictions.csv", "Quad+2ReLU", "eval/distill/private_cola-quad-2relu.csv"),
    ("sst2", "eval/private/teachers/sst2_predictions.csv", "Quad+2Quad", "eval/distill/private_sst2-quad-2quad.csv"),
    ("sst2", "eval/private/teachers/sst2_predictions.csv", "Quad+2ReLU", "eval/distill/private_sst2-quad-2relu.csv"),
    ("mrpc", "eval/private/teachers/mrpc_predictions.csv", "Quad+2Quad", "eval/distill/private_mrpc-quad-2quad_f18.csv"),
    ("mrpc", "eval/private/teachers/mrpc_predictions.csv", "Quad+2ReLU", "eval/distill/private_mrpc-quad-2relu.csv"),
    ("rte", "eval/private/teachers/rte_predictions.csv", "Quad+2Quad", "eval/distill/private_rte-quad-2quad.csv"),
    ("rte", "eval/private/teachers/rte_predictions.csv", "Quad+2ReLU", "eval/distill/private_rte-quad-2relu.csv"),
    # Plaintext `kd eval --predictions` of the re-trained CoLA teacher and its 12 + 3 student.
    ("cola", "eval/distill/plain_cola-teacher-run2.csv", "Quad+2ReLU 12 + 3 (teacher run 2)", "eval/distill/plain_cola-quad-2relu-s1x12.csv"),
    # and the students distilled on the augmented transfer sets (kd augment), same teacher.
    ("cola", "eval/distill/plain_cola-teacher-run2.csv", "Quad+2ReLU augmented 2 + 3 (teacher run 2)", "eval/distill/plain_cola-quad-2relu-aug.csv"),
    ("cola", "eval/distill/plain_cola-teacher-run2.csv", "Quad+2ReLU augmented, second round (teacher run 2)", "eval/distill/plain_cola-quad-2relu-aug2.csv"),
    ("cola", "eval/distill/plain_cola-teacher-run2.csv", "Quad+2ReLU augmented, second round, T = 2 (teacher run 2)", "eval/distill/plain_cola-quad-2relu-aug2-t2.csv"),
]
BOOTSTRAP = 2000
SEED = 7


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        margin = None
        if "logit_0" in r and "logit_1" in r:
            margin = abs(float(r["logit_1"]) - float(r["logit_0"]))
        out.append((int(r["index"]), int(r["label"]), int(r["prediction"]), margin))
    return out


def metric(task, labels, preds):
    return compute_metrics(task, preds, labels)[PRIMARY_METRIC[task]]


def quantiles(xs, qs):
    xs = sorted(xs)
    if not xs:
        return ["–" for _ in qs]
    return [f"{xs[min(len(xs) - 1, int(q * len(xs)))]:.2f}" for q in qs]


def main():
    rng = random.Random(SEED)
    print("<!-- written by scripts/paired_analysis.py -->")
    print("Paired analysis of the dev predictions behind `table.md` (teacher and student on the same rows;")
    print(f"paired bootstrap, {BOOTSTRAP} resamples, seed {SEED}; the CSVs are the private evaluations, which equal")
    print("the plaintext predictions row for row, except the last rows' `plain_*` CSVs, from `kd eval`). A \"flip\" is a row where the student's class differs from the")
    print("teacher's; \"rows per 2%\" is 2% of the teacher's metric divided by the mean metric change of one flip.\n")
    print("| task | student | teacher | student | ratio | 90% paired CI of ratio | agreement | flips T✓→S✗ / T✗→S✓ | metric per flip | rows per 2% | rate of class 1: teacher / student / gold | teacher margin, flipped rows (p25/p50/p75) | kept rows (p25/p50/p75) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task, tpath, slabel, spath in PAIRS:
        t, s = read(tpath), read(spath)
        if [r[0] for r in t] != [r[0] for r in s] or [r[1] for r in t] != [r[1] for r in s]:
            sys.exit(f"{spath}: rows or labels differ from {tpath}")
        for path in (tpath.replace("_predictions.csv", ".json"), spath.replace(".csv", ".json")):
            if "/plain_" in path:
                continue  # a plaintext evaluation
            with open(path) as f:
                agreement = json.load(f)["mpc"]["agreement"]
            if agreement != 1.0:
                sys.exit(f"{path}: private agreement {agreement} is not 1: its CSV is not the plaintext prediction")
        y = [r[1] for r in t]
        tp = [r[2] for r in t]
        sp = [r[2] for r in s]
        mt, ms = metric(task, y, tp), metric(task, y, sp)
        agree = sum(a == b for a, b in zip(tp, sp))
        bad = sum(a != b and a == l for a, b, l in zip(tp, sp, y))
        good = sum(a != b and b == l for a, b, l in zip(tp, sp, y))
        # Sensitivity: flip each teacher prediction alone and measure the metric change.
        deltas = []
        for i in range(len(y)):
            q = list(tp)
            q[i] = 1 - q[i]
            deltas.append(abs(metric(task, y, q) - mt))
        per_flip = sum(deltas) / len(deltas)
        rows_2pct = 0.02 * mt / per_flip
        n = len(y)
        ratios = []
        for _ in range(BOOTSTRAP):
            idx = [rng.randrange(n) for _ in range(n)]
            yy = [y[i] for i in idx]
            a = metric(task, yy, [tp[i] for i in idx])
            b = metric(task, yy, [sp[i] for i in idx])
            if a > 0:
                ratios.append(b / a)
        ratios.sort()
        lo, hi = ratios[int(0.05 * len(ratios))], ratios[int(0.95 * len(ratios)) - 1]
        flipped = [r[3] for r, b in zip(t, sp) if r[2] != b and r[3] is not None]
        kept = [r[3] for r, b in zip(t, sp) if r[2] == b and r[3] is not None]
        print(
            f"| {task} | {slabel} | {100 * mt:.1f} | {100 * ms:.1f} | {100 * ms / mt:.1f}% | "
            f"{100 * lo:.1f}%–{100 * hi:.1f}% | {100 * agree / n:.1f}% ({agree}/{n}) | {bad} / {good} | "
            f"{100 * per_flip:.3f} | {rows_2pct:.1f} | "
            f"{100 * sum(tp) / n:.1f}% / {100 * sum(sp) / n:.1f}% / {100 * sum(y) / n:.1f}% | {' / '.join(quantiles(flipped, [0.25, 0.5, 0.75]))} | "
            f"{' / '.join(quantiles(kept, [0.25, 0.5, 0.75]))} |"
        )


if __name__ == "__main__":
    main()
