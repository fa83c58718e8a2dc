#!/usr/bin/env python3
"""PyTorch CPU throughput reference (oracle for `kd` training/eval speed).

Measures BertForSequenceClassification (all-MiniLM-L6-v2, num_labels=2, eager attention)
on SST-2, with torch.set_num_threads(2) unless --threads is given:

  train  model.train(); batch i = rows [i*B, (i+1)*B) of SST-2 train.tsv in file order;
         forward + cross-entropy (the model's own loss) + backward
         + torch.optim.AdamW step (lr 5e-5, other arguments default, foreach default)
         + zero_grad. Each step is timed with time.perf_counter; the first --warmup
         steps are discarded; median / p10 / p90 seconds per step, examples/s
         (B / median) and tokens per batch (padded B*L and real) are reported.
  eval   model.eval(), torch.no_grad(); all 872 SST-2 dev rows, batches of B in file
         order; the whole pass is timed --eval-repeats times (after one untimed batch);
         median total seconds and examples/s are reported.

Both are run with dynamic padding (each batch padded to its longest row, at most
--max-seq-len) and with fixed padding to --max-seq-len, to show what dynamic padding
buys. Tokenisation: BertTokenizerFast, truncation="longest_first" to --max-seq-len.

Command (from the repository root):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venv/bin/python scripts/bench_torch.py \
        --model ../shared/models/all-MiniLM-L6-v2 --data ../shared/data/glue/SST-2 \
        --batch-size 32 --steps 30 --warmup 3 --out bench.json

Versions: python 3.11, torch 2.0.1 (CPU build), transformers 4.44.2, numpy 1.26.4.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from glue_common import load_split  # noqa: E402


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_batches(tok, texts, labels, bs, n_batches, max_len, fixed):
    out = []
    for i in range(n_batches):
        a = texts[i * bs : (i + 1) * bs]
        y = labels[i * bs : (i + 1) * bs]
        if not a:
            break
        enc = tok(
            a,
            max_length=max_len,
            truncation="longest_first",
            padding="max_length" if fixed else "longest",
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        out.append(
            (
                enc["input_ids"],
                enc["token_type_ids"],
                enc["attention_mask"],
                torch.tensor(y, dtype=torch.long),
            )
        )
    return out


def pct(xs, q):
    return float(np.percentile(np.array(xs), q))


def bench_train(args, tok, texts, labels, fixed):
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification.from_pretrained(
        args.model, num_labels=2, attn_implementation="eager"
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    n = args.warmup + args.steps
    batches = make_batches(tok, texts, labels, args.batch_size, n, args.max_seq_len, fixed)
    times, losses = [], []
    for i, (x, t, m, y) in enumerate(batches):
        t0 = time.perf_counter()
        out = model(input_ids=x, token_type_ids=t, attention_mask=m, labels=y)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        dt = time.perf_counter() - t0
        losses.append(float(out.loss.detach()))
        if i >= args.warmup:
            times.append(dt)
        print(
            f"train {'fixed' if fixed else 'dynamic'} step {i} L={x.shape[1]} {dt:.3f}s loss {losses[-1]:.4f}"
            + (" (warmup)" if i < args.warmup else ""),
            flush=True,
        )
    timed = batches[args.warmup :]
    med = statistics.median(times)
    return {
        "padding": "fixed" if fixed else "dynamic",
        "steps_timed": len(times),
        "warmup_steps": args.warmup,
        "median_s_per_step": med,
        "p10_s_per_step": pct(times, 10),
        "p90_s_per_step": pct(times, 90),
        "mean_s_per_step": statistics.mean(times),
        "examples_per_second": args.batch_size / med,
        "mean_padded_tokens_per_batch": statistics.mean(int(b[0].numel()) for b in timed),
        "mean_real_tokens_per_batch": statistics.mean(int(b[2].sum()) for b in timed),
        "seq_lens": [int(b[0].shape[1]) for b in timed],
        "step_seconds": times,
        "first_losses": losses[:5],
    }


@torch.no_grad()
def bench_eval(args, tok, texts, labels, fixed):
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification.from_pretrained(
        args.model, num_labels=2, attn_implementation="eager"
    )
    model.eval()
    nb = (len(texts) + args.batch_size - 1) // args.batch_size
    batches = make_batches(tok, texts, labels, args.batch_size, nb, args.max_seq_len, fixed)
    x, t, m, _ = batches[0]
    model(input_ids=x, token_type_ids=t, attention_mask=m)  # untimed warm-up batch
    totals = []
    correct = 0
    for r in range(args.eval_repeats):
        t0 = time.perf_counter()
        c = 0
        for x, t, m, y in batches:
            logits = model(input_ids=x, token_type_ids=t, attention_mask=m).logits
            c += int((logits.argmax(-1) == y).sum())
        totals.append(time.perf_counter() - t0)
        correct = c
        print(f"eval {'fixed' if fixed else 'dynamic'} repeat {r} {totals[-1]:.3f}s", flush=True)
    med = statistics.median(totals)
    return {
        "padding": "fixed" if fixed else "dynamic",
        "examples": len(texts),
        "batches": len(batches),
        "repeats": args.eval_repeats,
        "median_total_seconds": med,
        "total_seconds": totals,
        "examples_per_second": len(texts) / med,
        "padded_tokens": sum(int(b[0].numel()) for b in batches),
        "real_tokens": sum(int(b[2].sum()) for b in batches),
        "accuracy_untrained_head": correct / len(texts),
    }


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU throughput reference")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="SST-2 directory (train.tsv, dev.tsv)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-repeats", type=int, default=3)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-padding runs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    tok = BertTokenizerFast.from_pretrained(args.model)
    tr_a, _, tr_y = load_split(args.data, "sst2", "train")
    dv_a, _, dv_y = load_split(args.data, "sst2", "dev")

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    res = {"train": {}, "eval": {}}
    for fixed in ([False] if args.no_fixed else [False, True]):
        key = "fixed_%d" % args.max_seq_len if fixed else "dynamic"
        res["train"][key] = bench_train(args, tok, tr_a, tr_y, fixed)
        res["eval"][key] = bench_eval(args, tok, dv_a, dv_y, fixed)

    out = {
        "benchmark": "bert_sequence_classification_sst2",
        "model": args.model,
        "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len,
        "optimizer": "torch.optim.AdamW(lr=5e-5, betas=(0.9,0.999), eps=1e-8, weight_decay=0.01)",
        "results": res,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "os_cpu_count": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "bench_wall_seconds": time.perf_counter() - t0,
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    for kind in ("train", "eval"):
        for key, r in res[kind].items():
            print(f"{kind:5s} {key:10s} {r['examples_per_second']:.1f} ex/s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
