#!/usr/bin/env python3
"""Collect finished `kd train` runs into eval/distill/ (the paper's Table 2 layout).

Usage (from the repository root, after scripts/distill_runs.sh):

    python3 scripts/distill_table.py [--runs checkpoints/students] [--out eval/distill]

For every run directory with a train.json it copies train.json, log.csv, recipe.toml and
loss.png to OUT/runs/NAME/, and writes OUT/table.md (metric x100 per task and method,
the student's fraction of its own teacher, wall time per stage) and OUT/runs.csv. Runs
already collected in OUT/runs/ (earlier sittings: checkpoints are not kept) stay in the
tables; a run found under RUNS replaces its earlier copy.
"""
import argparse
import csv
import json
import os
import shutil
from pathlib import Path

TASKS = ["sst2", "cola", "stsb", "mrpc", "rte", "imdb"]
TASK_NAMES = {"sst2": "SST-2 (acc)", "cola": "CoLA (mcc)", "stsb": "STS-B (corr)", "mrpc": "MRPC (f1)", "rte": "RTE (acc)", "imdb": "IMDb (acc, seq 256)"}
METHODS = [
    ("quad-2quad-wopd", "MPCMiniLM w/o{p,d}", "Quad+2Quad"),
    ("quad-2quad-wod", "MPCMiniLM w/o{d}", "Quad+2Quad"),
    ("quad-2quad", "MPCMiniLM (distilled)", "Quad+2Quad"),
    ("quad-2relu-wod", "MPCMiniLM w/o{d}", "Quad+2ReLU"),
    ("quad-2relu", "MPCMiniLM (distilled)", "Quad+2ReLU"),
    ("quad-2quad-3l", "MPCMiniLM 3-layer (distilled)", "Quad+2Quad"),
    ("quad-2quad-s1x12", "MPCMiniLM (distilled, stage 1 ×4: 12 + 3 epochs)", "Quad+2Quad"),
    ("quad-2relu-s1x12", "MPCMiniLM (distilled, stage 1 ×4: 12 + 3 epochs)", "Quad+2ReLU"),
    ("quad-2relu-s1x12-s2lr5e5", "MPCMiniLM (distilled, 12 + 3 epochs, stage-2 lr 5e-5 from the same stage 1)", "Quad+2ReLU"),
    ("quad-2relu-wod15", "MPCMiniLM w/o{d}, same 15 epochs", "Quad+2ReLU"),
    ("quad-2quad-s2lr5e5", "MPCMiniLM (distilled, stage-2 lr 5e-5)", "Quad+2Quad"),
    ("quad-2relu-s2lr5e5", "MPCMiniLM (distilled, stage-2 lr 5e-5)", "Quad+2ReLU"),
    ("quad-2relu-s2x5", "MPCMiniLM (distilled, 3 + 5 epochs: the paper's 5 in stage 2)", "Quad+2ReLU"),
    ("quad-2relu-wod8", "MPCMiniLM w/o{d}, same 8 epochs", "Quad+2ReLU"),
    ("quad-2quad-bs8", "MPCMiniLM (distilled, batch 8)", "Quad+2Quad"),
    ("quad-2relu-paper", "MPCMiniLM (distilled, the paper's 50 + 5 epochs)", "Quad+2ReLU"),
    ("quad-2relu-aug", "MPCMiniLM (distilled on the training set + 8 word-substitution variants per row, 2 + 3 epochs)", "Quad+2ReLU"),
    ("quad-2relu-aug2", "MPCMiniLM (distilled, a second augmented round: 2 + 2 + 4 epochs, fresh variants)", "Quad+2ReLU"),
    ("quad-2relu-aug2-t2", "MPCMiniLM (as the second augmented round, stage-2 temperature 2)", "Quad+2ReLU"),
    ("quad-2relu-aug2-ema", "MPCMiniLM (as the second augmented round, the stage-2 weight average evaluated and kept)", "Quad+2ReLU"),
    ("quad-2relu-aug2-s2orig", "MPCMiniLM (second augmented round's stage 1, then stage 2 on the original training set: 3 epochs)", "Quad+2ReLU"),
    ("quad-2relu-wod45", "MPCMiniLM w/o{d}, 45 epochs (the augmented run's example passes)", "Quad+2ReLU"),
    ("quad-2quad-s1x10", "MPCMiniLM (distilled, stage 1 ×2: 10 + 3 epochs)", "Quad+2Quad"),
    ("quad-2quad-s1x2", "MPCMiniLM (distilled, stage 1 ×4: 2 + 0.5 epochs)", "Quad+2Quad"),
    ("quad-2quad-s1x10-c2", "MPCMiniLM (distilled, 10 + 3 epochs, 2Quad constant c = 2)", "Quad+2Quad (c = 2)"),
]


def agreement(name, s):
    """train.json's teacher_agreement: argmax agreement in %, or Pearson r for STS-B."""
    a = s.get("teacher_agreement")
    if a is None:
        return "—"
    return f"r = {a:.3f}" if name.startswith("stsb") else f"{100 * a:.1f}%"


def late_median(log):
    """Median dev metric (x100) over the second half of a run's stage-2 evaluations, and how
    many evaluations there were: the best checkpoint is the maximum of a noisy series, this
    is its typical late value (CoLA's moves by ~0.3 MCC points per flipped sentence)."""
    if not log.exists():
        return "—"
    with open(log, newline="") as f:
        v = [100 * float(r["dev_metric"]) for r in csv.DictReader(f) if r["stage"] == "2" and r["dev_metric"]]
    if not v:
        return "—"
    late = sorted(v[len(v) // 2:])
    n = len(late)
    med = late[n // 2] if n % 2 else (late[n // 2 - 1] + late[n // 2]) / 2
    return f"{med:.1f} ({len(v)})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="checkpoints/students")
    ap.add_argument("--out", default="eval/distill")
    a = ap.parse_args()
    runs, out = Path(a.runs), Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    found = {}
    for j in sorted((out / "runs").glob("*/train.json")):
        found[j.parent.name] = json.loads(j.read_text())
    env = os.environ.get("KD_ASSETS", "../shared")
    assets_roots = sorted({env.rstrip("/"), os.path.realpath(env), os.path.realpath("../shared")} - {"../shared"},
                          key=len, reverse=True)
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        j = d / "train.json"
        if not j.exists():
            continue
        s = json.loads(j.read_text())
        found[d.name] = s
        dst = out / "runs" / d.name
        dst.mkdir(exist_ok=True)
        for f in ["train.json", "log.csv", "recipe.toml", "loss.png"]:
            if not (d / f).exists():
                continue
            if f in ("train.json", "recipe.toml"):
                # The resolved recipe holds this machine's asset path; the committed copy says
                # ../shared (the default KD_ASSETS) so results do not depend on where it ran.
                text = (d / f).read_text()
                for root in assets_roots:
                    text = text.replace(f'"{root}/', '"../shared/')
                (dst / f).write_text(text)
            else:
                shutil.copy(d / f, dst / f)
    teacher = {}
    # Teachers' dev metrics: each run's own evaluation of its teacher; a task without runs
    # takes its fine-tuning summary (eval/teachers/kd_TASK.json). A task whose runs saw
    # different teachers (a teacher re-trained in a later sitting) lists each.
    for name, s in sorted(found.items()):
        t = s["recipe"]["task"]
        if s.get("teacher_metric") is not None:
            teacher.setdefault(t, [])
            # (the same teacher's metric can differ in the last bit between runs)
            if all(abs(s["teacher_metric"] - m) > 1e-9 for m in teacher[t]):
                teacher[t].append(s["teacher_metric"])
    for t in TASKS:
        f = Path("eval/teachers") / f"kd_{t}.json"
        if t not in teacher and f.exists():
            teacher[t] = [json.loads(f.read_text())["best_metric"]]
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "task", "finished", "best_metric", "teacher_metric", "fraction_of_teacher",
                    "best_step", "stage1_steps", "stage1_seconds", "stage1_ex_per_s", "stage2_steps",
                    "stage2_seconds", "stage2_ex_per_s"])
        for name, s in sorted(found.items()):
            s1 = s.get("stage1") or {}
            s2 = s["stage2"]
            w.writerow([name, s["recipe"]["task"], s["finished"], s["best_metric"], s["teacher_metric"],
                        s["fraction_of_teacher"], s["best_step"], s1.get("steps", 0), round(s1.get("seconds", 0), 1),
                        round(s1.get("examples_per_second", 0), 2), s2["steps"], round(s2["seconds"], 1),
                        round(s2["examples_per_second"], 2)])

    def cell(task, suffix):
        s = found.get(f"{task}-{suffix}")
        if s is None or s.get("best_metric") is None:
            return "—"
        v = f"{100 * s['best_metric']:.1f}"
        if not s["finished"]:
            v += " (partial)"
        ref = s.get("teacher_metric") or (teacher.get(task) or [None])[0]
        if ref:
            v += f" ({100 * s['best_metric'] / ref:.2f}%)"
        if len(teacher.get(task, [])) > 1 and s.get("teacher_metric") is not None:
            v += f" [teacher {100 * s['teacher_metric']:.1f}]"
        return v

    lines = ["| Method | Approx. | " + " | ".join(TASK_NAMES[t] for t in TASKS) + " |",
             "|---|---|" + "---|" * len(TASKS)]
    lines.append("| MiniLM-L6 teacher (kd finetune) | GeLU+Softmax | " +
                 " | ".join(" / ".join(f"{100 * m:.1f}" for m in teacher[t]) if t in teacher else "—" for t in TASKS) + " |")
    for suffix, label, approx in METHODS:
        if not any(f"{t}-{suffix}" in found for t in TASKS):
            continue
        lines.append(f"| {label} | {approx} | " + " | ".join(cell(t, suffix) for t in TASKS) + " |")
    timing = ["| Run | stage 1 steps | stage 1 wall s | stage 1 ex/s | stage 2 steps | stage 2 wall s | stage 2 ex/s | agreement with teacher (dev) | late dev metric (evaluations) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, s in sorted(found.items()):
        s1 = s.get("stage1") or {}
        s2 = s["stage2"]
        timing.append(f"| {name} | {s1.get('steps', 0)} | {s1.get('seconds', 0):.0f} | {s1.get('examples_per_second', 0):.1f} | "
                      f"{s2['steps']} | {s2['seconds']:.0f} | {s2['examples_per_second']:.1f} | {agreement(name, s)} | "
                      f"{late_median(out / 'runs' / name / 'log.csv')} |")
    (out / "table.md").write_text(
        "<!-- written by scripts/distill_table.py from each run's train.json (eval/distill/runs/, checkpoints/students/) -->\n"
        "Dev metric x100 (best stage-2 checkpoint); in brackets the fraction of its teacher's dev metric\n"
        "(where a task's teacher was re-trained, each run names the teacher it was measured against).\n\n"
        + "\n".join(lines) + "\n\nWall time per stage (training steps only; dev evaluation excluded), and how often the best\n"
        "student's dev prediction equals the teacher's (STS-B: correlation of the two outputs); last, the\n"
        "median dev metric x100 over the second half of the stage-2 evaluations (their count in brackets),\n"
        "the run's typical late value where the best checkpoint is the maximum of a noisy series:\n\n"
        + "\n".join(timing) + "\n")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
