#!/usr/bin/env python3
"""How closely a student follows its teacher on the sentences it was distilled on (train) and
on unseen ones (dev): the teacher's mean entropy, the soft cross-entropy and KL(teacher ||
student) at temperature 1 (the stage-2 objective, without dropout), argmax agreement, and both
models' MCC, from `kd eval --predictions` CSVs of CoLA.

    for s in train dev; do
      kd eval --model TEACHER --task cola --data DATA --split $s --predictions /tmp/t_$s.csv --no-results
      kd eval --model STUDENT --task cola --data DATA --split $s --predictions /tmp/s_$s.csv --no-results
    done
    python3 scripts/mimic_gap.py --label NAME /tmp/t_train.csv /tmp/s_train.csv /tmp/t_dev.csv /tmp/s_dev.csv
"""
import argparse
import csv
import math

from glue_common import compute_metrics


def rows(path):
    with open(path, newline="") as f:
        return [(int(r["index"]), int(r["label"]), float(r["logit_0"]), float(r["logit_1"])) for r in csv.DictReader(f)]


def probs(z0, z1):
    m = max(z0, z1)
    a, b = math.exp(z0 - m), math.exp(z1 - m)
    return a / (a + b), b / (a + b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("csvs", nargs=4, metavar="CSV", help="teacher train, student train, teacher dev, student dev")
    a = ap.parse_args()
    print(f"| student | split | rows | teacher entropy | soft CE | KL(teacher ‖ student) | agreement | teacher MCC | student MCC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for split, (tp, sp) in (("train", a.csvs[0:2]), ("dev", a.csvs[2:4])):
        t, s = rows(tp), rows(sp)
        if [r[:2] for r in t] != [r[:2] for r in s]:
            raise SystemExit(f"{sp}: rows or labels differ from {tp}")
        h = ce = 0.0
        agree = 0
        for (_, _, a0, a1), (_, _, b0, b1) in zip(t, s):
            pt, ps = probs(a0, a1), probs(b0, b1)
            h -= sum(p * math.log(max(p, 1e-300)) for p in pt)
            ce -= sum(p * math.log(max(q, 1e-300)) for p, q in zip(pt, ps))
            agree += (a1 > a0) == (b1 > b0)
        n = len(t)
        y = [r[1] for r in t]
        mt = compute_metrics("cola", [int(r[3] > r[2]) for r in t], y)["mcc"]
        ms = compute_metrics("cola", [int(r[3] > r[2]) for r in s], y)["mcc"]
        print(f"| {a.label} | {split} | {n} | {h / n:.4f} | {ce / n:.4f} | {(ce - h) / n:.4f} | {100 * agree / n:.1f}% | "
              f"{100 * mt:.1f} | {100 * ms:.1f} |")


if __name__ == "__main__":
    main()
