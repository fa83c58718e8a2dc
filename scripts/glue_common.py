"""Shared GLUE TSV reading and metric helpers for the Python oracle scripts.

The readers mirror what the Rust side does: split each line on tabs with no quote
handling, drop a UTF-8 BOM and the line ending, skip the header row (CoLA has none).
Metrics follow the GLUE conventions (accuracy; F1 + accuracy for MRPC; Matthews
correlation for CoLA; Pearson and Spearman for STS-B).
"""

import math
import os

# task -> (directory name, has header, text_a col, text_b col or None, label col, kind)
TASKS = {
    "sst2": ("SST-2", True, 0, None, 1, "cls"),
    "mrpc": ("MRPC", True, 3, 4, 0, "cls"),
    "rte": ("RTE", True, 1, 2, -1, "cls"),
    "stsb": ("STS-B", True, 7, 8, 9, "reg"),
    "cola": ("CoLA", False, 3, None, 1, "cls"),
}

RTE_LABELS = {"entailment": 0, "not_entailment": 1}

# metric used to pick the best epoch
PRIMARY_METRIC = {"sst2": "accuracy", "mrpc": "f1", "rte": "accuracy", "stsb": "pearson", "cola": "mcc"}


def num_labels(task):
    return 1 if TASKS[task][5] == "reg" else 2


def read_tsv_rows(path):
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if line.startswith("\ufeff"):
                line = line[1:]
            if line == "":
                continue
            rows.append(line.split("\t"))
    return rows


def task_dir(data, task):
    """``data`` may be the task directory itself or the GLUE root containing it."""
    if os.path.exists(os.path.join(data, "train.tsv")) or os.path.exists(os.path.join(data, "dev.tsv")):
        return data
    return os.path.join(data, TASKS[task][0])


def load_split(data, task, split):
    """Returns (text_a list, text_b list or None, labels list)."""
    _, header, ca, cb, cl, kind = TASKS[task]
    rows = read_tsv_rows(os.path.join(task_dir(data, task), split + ".tsv"))
    if header:
        rows = rows[1:]
    a, b, y = [], ([] if cb is not None else None), []
    for r in rows:
        a.append(r[ca])
        if cb is not None:
            b.append(r[cb])
        lab = r[cl]
        if kind == "reg":
            y.append(float(lab))
        elif task == "rte":
            y.append(RTE_LABELS[lab])
        else:
            y.append(int(lab))
    return a, b, y


def _rank(xs):
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def compute_metrics(task, preds, labels):
    """preds: predicted class ids (classification) or scores (regression)."""
    if TASKS[task][5] == "reg":
        try:
            from scipy.stats import pearsonr, spearmanr

            p = float(pearsonr(preds, labels)[0])
            s = float(spearmanr(preds, labels)[0])
        except ImportError:  # pragma: no cover
            p = _pearson(preds, labels)
            s = _pearson(_rank(preds), _rank(labels))
        return {"pearson": p, "spearman": s, "corr": (p + s) / 2.0}
    n = len(labels)
    tp = sum(1 for p, l in zip(preds, labels) if p == 1 and l == 1)
    tn = sum(1 for p, l in zip(preds, labels) if p == 0 and l == 0)
    fp = sum(1 for p, l in zip(preds, labels) if p == 1 and l == 0)
    fn = sum(1 for p, l in zip(preds, labels) if p == 0 and l == 1)
    acc = (tp + tn) / n if n else 0.0
    out = {"accuracy": acc}
    if task == "mrpc":
        denom = 2 * tp + fp + fn
        out["f1"] = (2 * tp / denom) if denom else 0.0
        out["acc_and_f1"] = (acc + out["f1"]) / 2.0
    if task == "cola":
        denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        out["mcc"] = ((tp * tn - fp * fn) / denom) if denom else 0.0
    return out
