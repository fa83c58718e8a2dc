#!/usr/bin/env python3
"""HuggingFace transformers fine-tuning baseline (oracle for `kd finetune`).

A plain, transparent PyTorch training loop (no Trainer) that reproduces the standard
GLUE recipe so the Rust/candle fine-tuning can be compared against it on accuracy and
on speed:

  * GLUE TSVs read directly (tab split, no quote handling; see scripts/glue_common.py)
  * BertTokenizerFast, truncation="longest_first" to --max-seq-len, DYNAMIC padding
    (each batch padded to its longest row)
  * BertForSequenceClassification (num_labels=2; 1 + problem_type="regression" for
    stsb), eager attention, dropout active during training
  * torch.optim.AdamW(betas=(0.9, 0.999), eps=1e-8), weight decay on every parameter
    except biases and LayerNorm weights (as HF Trainer)
  * transformers.get_linear_schedule_with_warmup, warmup steps = ceil(ratio * total)
  * global grad-norm clipping at 1.0 before each optimizer step
  * training order shuffled each epoch with a torch.Generator seeded by --seed; the last
    partial batch is kept
  * dev evaluation (batch 64, no grad) after each epoch (--eval-every-epoch) or only at
    the end

Command (from the repository root):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venv/bin/python scripts/hf_finetune.py \
        --task mrpc --data ../shared/data/glue --model ../shared/models/all-MiniLM-L6-v2 \
        --lr 5e-5 --epochs 3 --batch-size 32 --max-seq-len 128 --warmup-ratio 0.1 \
        --weight-decay 0.01 --seed 42 --eval-every-epoch --out results.json [--limit-train N]

--data may be the GLUE root (containing MRPC/, SST-2/, ...) or the task directory.

Versions: python 3.11, torch 2.0.1 (CPU), transformers 4.44.2, scipy 1.17.1,
numpy 1.26.4. Runs with torch.set_num_threads(2) unless --threads is given.
"""

import argparse
import json
import math
import os
import random
import shlex
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    BertForSequenceClassification,
    BertTokenizerFast,
    get_linear_schedule_with_warmup,
)

from glue_common import PRIMARY_METRIC, TASKS, compute_metrics, load_split, num_labels  # noqa: E402


def encode(tok, a, b, max_len):
    enc = tok(
        a,
        b,
        max_length=max_len,
        truncation="longest_first",
        padding=False,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    return enc["input_ids"], enc["token_type_ids"]


def collate(ids, tts, labels, idx, regression):
    """Pads the selected rows to the longest among them (pad id 0, type 0, mask 0)."""
    L = max(len(ids[i]) for i in idx)
    B = len(idx)
    x = torch.zeros((B, L), dtype=torch.long)
    t = torch.zeros((B, L), dtype=torch.long)
    m = torch.zeros((B, L), dtype=torch.long)
    for r, i in enumerate(idx):
        n = len(ids[i])
        x[r, :n] = torch.tensor(ids[i])
        t[r, :n] = torch.tensor(tts[i])
        m[r, :n] = 1
    y = torch.tensor([labels[i] for i in idx], dtype=torch.float32 if regression else torch.long)
    return x, t, m, y


@torch.no_grad()
def evaluate(model, task, ids, tts, labels, batch_size):
    regression = TASKS[task][5] == "reg"
    was_training = model.training
    model.eval()
    preds = []
    for s in range(0, len(ids), batch_size):
        idx = list(range(s, min(s + batch_size, len(ids))))
        x, t, m, _ = collate(ids, tts, labels, idx, regression)
        logits = model(input_ids=x, token_type_ids=t, attention_mask=m).logits
        if regression:
            preds.extend(logits[:, 0].tolist())
        else:
            preds.extend(logits.argmax(-1).tolist())
    if was_training:
        model.train()
    return compute_metrics(task, preds, labels)


def main():
    ap = argparse.ArgumentParser(description="HF transformers GLUE fine-tuning baseline")
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--data", required=True, help="GLUE root or task directory")
    ap.add_argument("--model", required=True, help="HF BERT model directory")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--eval-every-epoch", action="store_true")
    ap.add_argument("--limit-train", type=int, default=None, help="use the first N train rows")
    ap.add_argument("--limit-eval", type=int, default=None, help="use the first N dev rows")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    task = args.task
    regression = TASKS[task][5] == "reg"
    tok = BertTokenizerFast.from_pretrained(args.model)

    tr_a, tr_b, tr_y = load_split(args.data, task, "train")
    dv_a, dv_b, dv_y = load_split(args.data, task, "dev")
    if args.limit_train is not None:
        tr_a, tr_y = tr_a[: args.limit_train], tr_y[: args.limit_train]
        tr_b = tr_b[: args.limit_train] if tr_b is not None else None
    if args.limit_eval is not None:
        dv_a, dv_y = dv_a[: args.limit_eval], dv_y[: args.limit_eval]
        dv_b = dv_b[: args.limit_eval] if dv_b is not None else None
    tr_ids, tr_tt = encode(tok, tr_a, tr_b, args.max_seq_len)
    dv_ids, dv_tt = encode(tok, dv_a, dv_b, args.max_seq_len)
    n_train = len(tr_ids)
    print(f"task={task} train={n_train} dev={len(dv_ids)}", flush=True)

    kw = {"num_labels": num_labels(task), "attn_implementation": "eager"}
    if regression:
        kw["problem_type"] = "regression"
    model = BertForSequenceClassification.from_pretrained(args.model, **kw)
    model.train()

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name.endswith(".bias") or "LayerNorm.weight" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = math.ceil(args.warmup_ratio * total_steps)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, total_steps)

    gen = torch.Generator()
    gen.manual_seed(args.seed)

    per_epoch = []
    step = 0
    total_train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n_train, generator=gen).tolist()
        t_ep = time.perf_counter()
        win_loss, win_n, win_t, win_ex = 0.0, 0, time.perf_counter(), 0
        ep_loss, ep_n = 0.0, 0
        for s in range(0, n_train, args.batch_size):
            idx = order[s : s + args.batch_size]
            x, t, m, y = collate(tr_ids, tr_tt, tr_y, idx, regression)
            out = model(input_ids=x, token_type_ids=t, attention_mask=m, labels=y)
            loss = out.loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            lv = float(loss.detach())
            win_loss += lv
            win_n += 1
            win_ex += len(idx)
            ep_loss += lv
            ep_n += 1
            if step % args.log_every == 0 or s + args.batch_size >= n_train:
                dt = time.perf_counter() - win_t
                print(
                    f"epoch {epoch} step {step}/{total_steps} loss {win_loss / win_n:.4f} "
                    f"lr {sched.get_last_lr()[0]:.3e} {win_ex / dt:.1f} ex/s",
                    flush=True,
                )
                win_loss, win_n, win_t, win_ex = 0.0, 0, time.perf_counter(), 0
        train_seconds = time.perf_counter() - t_ep
        total_train_seconds += train_seconds
        rec = {"epoch": epoch, "train_seconds": train_seconds, "train_loss": ep_loss / max(ep_n, 1)}
        if args.eval_every_epoch or epoch == args.epochs:
            t_ev = time.perf_counter()
            rec["metrics"] = evaluate(model, task, dv_ids, dv_tt, dv_y, args.eval_batch_size)
            rec["eval_seconds"] = time.perf_counter() - t_ev
            print(f"epoch {epoch} dev {json.dumps(rec['metrics'])}", flush=True)
        per_epoch.append(rec)

    primary = PRIMARY_METRIC[task]
    evaluated = [r for r in per_epoch if "metrics" in r]
    best = max(evaluated, key=lambda r: r["metrics"][primary])
    wall = time.perf_counter() - t_start
    result = {
        "task": task,
        "hyperparameters": {
            "model": args.model,
            "lr": args.lr,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "eval_batch_size": args.eval_batch_size,
            "max_seq_len": args.max_seq_len,
            "warmup_ratio": args.warmup_ratio,
            "warmup_steps": warmup_steps,
            "total_steps": total_steps,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "adam_betas": [0.9, 0.999],
            "adam_eps": 1e-8,
            "seed": args.seed,
            "padding": "dynamic (longest in batch)",
            "truncation": "longest_first",
            "limit_train": args.limit_train,
            "limit_eval": args.limit_eval,
            "n_train": n_train,
            "n_dev": len(dv_ids),
        },
        "primary_metric": primary,
        "per_epoch": per_epoch,
        "best": {"epoch": best["epoch"], "metrics": best["metrics"]},
        "final": {"metrics": per_epoch[-1]["metrics"]},
        "wall_seconds": wall,
        "train_seconds": total_train_seconds,
        "train_examples_per_second": n_train * args.epochs / total_train_seconds,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}: final {json.dumps(result['final']['metrics'])} wall {wall:.1f}s")


if __name__ == "__main__":
    main()
