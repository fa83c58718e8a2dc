#!/usr/bin/env python3
"""PyTorch reference for the distillation step (oracle for `kd bench distill`).

The same two steps `kd bench distill` times, on the same batches (MRPC train rows in file
order, batch size B, each batch padded to its longest row, max length 128):

  stage 1  teacher (MiniLM-L6, GeLU+softmax, eval mode, no_grad) forward with every layer's
           pre-softmax scores; student (a copy with Quad+2Quad, train mode, dropout 0.1)
           forward; loss = sum over layers of MSE(scores) over real (query, key) pairs
           + sum over the 7 hidden states of MSE over real tokens; backward; BertAdam step.
  stage 2  teacher forward; student forward; soft cross-entropy (mean over batch x classes);
           backward; BertAdam step.

BertAdam (MPCFormer's optimiser): no bias correction, eps 1e-6, decoupled weight decay 0.01
except bias/LayerNorm, per-tensor clipping at 1.0 -- written with torch._foreach ops, so the
update is a handful of fused multi-tensor kernels, not a Python loop per parameter.
Medians over --steps timed steps after --warmup; torch.set_num_threads(2) unless --threads.

Command (from the repository root):

    /work/venv/bin/python scripts/bench_kd_torch.py --model ../shared/models/all-MiniLM-L6-v2 \
        --data ../shared/data/glue/MRPC --batch-size 32 --steps 20 --warmup 3 --out kd_torch.json

Versions: python 3.11, torch 2.0.1 (CPU build), transformers 4.44.2.
"""

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers import BertForSequenceClassification, BertTokenizerFast  # noqa: E402

from glue_common import load_split  # noqa: E402
from make_golden import QUAD_C, make_act  # noqa: E402


def scored_self_attention_forward(self, hidden_states, attention_mask=None, head_mask=None,
                                  encoder_hidden_states=None, encoder_attention_mask=None,
                                  past_key_value=None, output_attentions=False):
    """Eager BertSelfAttention.forward (transformers 4.44.2) that records the masked scaled
    scores (with autograd) in self._scores and normalises them with softmax or 2Quad."""
    q = self.transpose_for_scores(self.query(hidden_states))
    k = self.transpose_for_scores(self.key(hidden_states))
    v = self.transpose_for_scores(self.value(hidden_states))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
    self._scores = scores + attention_mask
    if self._kd_softmax_act == "softmax":
        probs = nn.functional.softmax(scores + attention_mask, dim=-1)
    else:  # 2quad with the 0/1 key mask
        m = (attention_mask == 0).to(scores.dtype)
        qd = (scores + QUAD_C) ** 2 * m
        probs = qd / qd.sum(dim=-1, keepdim=True)
    probs = self.dropout(probs)
    ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
    return (ctx.view(ctx.size()[:-2] + (self.all_head_size,)),)


def patch(model, hidden_act, softmax_act):
    for layer in model.bert.encoder.layer:
        if hidden_act is not None:
            layer.intermediate.intermediate_act_fn = make_act(hidden_act)
        sa = layer.attention.self
        sa._kd_softmax_act = softmax_act
        sa.forward = types.MethodType(scored_self_attention_forward, sa)
    return model


def scores(model):
    return [layer.attention.self._scores for layer in model.bert.encoder.layer]


class BertAdam:
    def __init__(self, named_params, lr, wd=0.01, b1=0.9, b2=0.999, eps=1e-6, clip=1.0):
        self.decay = [p for n, p in named_params if not (n.endswith("bias") or "LayerNorm" in n)]
        self.no_decay = [p for n, p in named_params if n.endswith("bias") or "LayerNorm" in n]
        self.params = self.decay + self.no_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr, self.wd, self.b1, self.b2, self.eps, self.clip = lr, wd, b1, b2, eps, clip

    @torch.no_grad()
    def step(self):
        ps = [p for p in self.params if p.grad is not None]
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        gs = [p.grad for p in ps]
        norms = torch._foreach_norm(gs)
        scale = [min(1.0, self.clip / (float(n) + 1e-6)) for n in norms]
        torch._foreach_mul_(gs, scale)
        ms, vs = [self.m[i] for i in idx], [self.v[i] for i in idx]
        torch._foreach_mul_(ms, self.b1)
        torch._foreach_add_(ms, gs, alpha=1 - self.b1)
        torch._foreach_mul_(vs, self.b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - self.b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, self.eps)
        upd = torch._foreach_div(ms, denom)
        nd = len(self.decay)
        dec = [j for j, i in enumerate(idx) if i < nd]
        if dec:
            torch._foreach_add_([upd[j] for j in dec], [ps[j] for j in dec], alpha=self.wd)
        torch._foreach_add_(ps, upd, alpha=-self.lr)
        for p in ps:
            p.grad = None


def layerwise_loss(s_out, t_out, s_scores, t_scores, am):
    m = am.to(torch.float32)
    pairs = m[:, None, :, None] * m[:, None, None, :]
    n_pairs = float((m.sum(1) ** 2).sum())
    n_tok = float(m.sum())
    loss = 0.0
    for s, t in zip(s_scores, t_scores):
        heads = s.shape[1]
        loss = loss + ((s * pairs - t * pairs) ** 2).sum() / (n_pairs * heads)
    tok = m[:, :, None]
    for s, t in zip(s_out.hidden_states, t_out.hidden_states):
        loss = loss + (((s - t) * tok) ** 2).sum() / (n_tok * s.shape[-1])
    return loss


def soft_ce(s, t):
    return (-torch.softmax(t, -1) * torch.log_softmax(s, -1)).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(args.model)
    a, b, _ = load_split(args.data, "mrpc", "train")
    n = (args.steps + args.warmup) * args.batch_size
    rows = list(zip(a, b))[:n]
    batches = []
    for i in range(0, len(rows), args.batch_size):
        chunk = rows[i:i + args.batch_size]
        enc = tok([r[0] for r in chunk], [r[1] for r in chunk], max_length=128, truncation="longest_first",
                  padding="longest", return_tensors="pt")
        batches.append((enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]))
    teacher = BertForSequenceClassification.from_pretrained(args.model, num_labels=2, attn_implementation="eager")
    student = copy.deepcopy(teacher)
    patch(teacher, None, "softmax")
    patch(student, "quad", "2quad")
    teacher.eval()
    student.train()
    result = {"task": "mrpc", "batch_size": args.batch_size, "student": "quad+2quad, 6 layers",
              "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__}
    for stage in (1, 2):
        opt = BertAdam(list(student.named_parameters()), lr=1e-5)
        times = []
        for i, (x, tt, am) in enumerate(batches):
            t0 = time.perf_counter()
            with torch.no_grad():
                t_out = teacher(input_ids=x, token_type_ids=tt, attention_mask=am, output_hidden_states=stage == 1)
                t_scores = scores(teacher) if stage == 1 else None
            s_out = student(input_ids=x, token_type_ids=tt, attention_mask=am, output_hidden_states=stage == 1)
            if stage == 1:
                loss = layerwise_loss(s_out, t_out, scores(student), t_scores, am)
            else:
                loss = soft_ce(s_out.logits, t_out.logits)
            loss.backward()
            opt.step()
            float(loss)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
            print(f"stage {stage} step {i} L={x.shape[1]} {dt:.3f}s loss {float(loss):.4f}", flush=True)
        med = statistics.median(times)
        result[f"stage{stage}_step_median_s"] = med
        result[f"stage{stage}_examples_per_s"] = args.batch_size / med
        result["steps_timed"] = len(times)
        result["mean_padded_len"] = statistics.mean(int(b[0].shape[1]) for b in batches[args.warmup:])
    js = json.dumps(result, indent=2)
    print(js)
    if args.out:
        with open(args.out, "w") as f:
            f.write(js + "\n")


if __name__ == "__main__":
    main()
