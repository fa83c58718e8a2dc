#!/usr/bin/env python3
"""How well does 2Quad, (s + c)^2 / sum (s + c)^2, reproduce softmax on a teacher's own scores?

Stage 1 of the distillation pulls the student's pre-normalisation attention scores s towards
the teacher's (MSE), while the student normalises them with 2Quad instead of softmax. The
closer 2Quad(s_teacher, c) is to softmax(s_teacher), the less those scores and the
hidden-state targets pull against each other. This script runs the teacher (a `kd finetune`
checkpoint, GeLU + softmax, eval mode) over dev rows of a GLUE task, collects every layer's
scores q.k / sqrt(d_head) at real (query, key) pairs, and reports per c:

  - the fraction of scores below -c (where (s + c)^2 grows again as s falls),
  - the mean total-variation distance between softmax(s) and 2Quad(s, c) per attention row,
  - the 2Quad mass put on keys that softmax gives < 1% of the row's mass,
and the same two distances for 2ReLU, (relu(s) + eps/L) / (sum relu(s) + eps), for reference.

Plain torch (the BERT forward is written out here, independently of the Rust code), so it
also cross-checks which c suits the teacher without any training.

Command (from the repository root):

    python3 scripts/attention_scores.py --model checkpoints/teachers/mrpc \
        --data ../shared/data/glue/MRPC --task mrpc --rows 200 --c 0,1,2,3,4,5,8,10 \
        --out eval/distill/attention_scores_mrpc.json

Needs torch, safetensors and tokenizers (`pip install torch safetensors tokenizers`; run here
with torch 2.15.0, safetensors 0.8.0, tokenizers 0.23.3).
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from glue_common import load_split  # noqa: E402


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def teacher_scores(weights, cfg, ids, types):
    """Every layer's pre-normalisation scores [heads, n, n] for one unpadded row."""
    p = "bert."
    h = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // h
    eps = cfg["layer_norm_eps"]
    n = ids.shape[0]
    x = (weights[p + "embeddings.word_embeddings.weight"][ids]
         + weights[p + "embeddings.position_embeddings.weight"][:n]
         + weights[p + "embeddings.token_type_embeddings.weight"][types])
    x = layer_norm(x, weights[p + "embeddings.LayerNorm.weight"], weights[p + "embeddings.LayerNorm.bias"], eps)
    out = []
    for i in range(cfg["num_hidden_layers"]):
        L = f"{p}encoder.layer.{i}."

        def lin(name, t):
            return t @ weights[L + name + ".weight"].T + weights[L + name + ".bias"]

        q = lin("attention.self.query", x).view(n, h, d).transpose(0, 1)
        k = lin("attention.self.key", x).view(n, h, d).transpose(0, 1)
        v = lin("attention.self.value", x).view(n, h, d).transpose(0, 1)
        s = q @ k.transpose(1, 2) / math.sqrt(d)
        out.append(s)
        ctx = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(n, h * d)
        a = layer_norm(lin("attention.output.dense", ctx) + x,
                       weights[L + "attention.output.LayerNorm.weight"], weights[L + "attention.output.LayerNorm.bias"], eps)
        f = torch.nn.functional.gelu(lin("intermediate.dense", a))
        x = layer_norm(lin("output.dense", f) + a, weights[L + "output.LayerNorm.weight"], weights[L + "output.LayerNorm.bias"], eps)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--max-seq-len", type=int, default=128)
    ap.add_argument("--c", default="0,1,2,3,4,5,8,10")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)  # the quantiles of large layers come from a random subsample

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    if cfg.get("softmax_act", "softmax") != "softmax" or cfg.get("hidden_act") != "gelu":
        sys.exit(f"{args.model}/config.json: expected a GeLU + softmax teacher")
    weights = {k: v.float() for k, v in load_file(os.path.join(args.model, "model.safetensors")).items()}
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()  # the saved tokenizer may pad to a fixed length; scores here are unpadded
    tok.enable_truncation(args.max_seq_len)
    a, b, _ = load_split(args.data, args.task, "dev")
    cs = [float(c) for c in args.c.split(",")]

    per_layer = [[] for _ in range(cfg["num_hidden_layers"])]
    stats = {c: {"tv": 0.0, "leak": 0.0, "below": 0} for c in cs}
    relu_st = {"tv": 0.0, "leak": 0.0}
    rows_n = 0
    total_scores = 0
    with torch.no_grad():
        for i in range(min(args.rows, len(a))):
            enc = tok.encode(a[i], b[i]) if b is not None else tok.encode(a[i])
            ids = torch.tensor(enc.ids)
            types = torch.tensor(enc.type_ids)
            for li, s in enumerate(teacher_scores(weights, cfg, ids, types)):
                per_layer[li].append(s.flatten())
                p = torch.softmax(s, -1)
                rows_n += s.shape[0] * s.shape[1]
                total_scores += s.numel()
                r2 = torch.relu(s) + 1e-12 / s.shape[-1]
                r2 = r2 / r2.sum(-1, keepdim=True)
                relu_st["tv"] += 0.5 * (r2 - p).abs().sum(-1).sum().item()
                relu_st["leak"] += (r2 * (p < 0.01)).sum(-1).sum().item()
                for c in cs:
                    qd = (s + c) ** 2
                    qd = qd / qd.sum(-1, keepdim=True)
                    st = stats[c]
                    st["tv"] += 0.5 * (qd - p).abs().sum(-1).sum().item()
                    st["leak"] += (qd * (p < 0.01)).sum(-1).sum().item()
                    st["below"] += (s < -c).sum().item()

    result = {"model": args.model, "task": args.task, "dev_rows": min(args.rows, len(a)), "scores": total_scores,
              "layers": [], "by_c": []}
    qs = torch.tensor([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    print(f"{args.model}: {result['dev_rows']} dev rows, {total_scores} scores")
    print("layer  min     q01     q05     q25     median  q75     q95     q99     max")
    for li, parts in enumerate(per_layer):
        s = torch.cat(parts)
        sample = s if s.numel() <= 4_000_000 else s[torch.randperm(s.numel())[:4_000_000]]
        q = torch.quantile(sample, qs).tolist()
        result["layers"].append({"layer": li, "min": s.min().item(), "max": s.max().item(),
                                 "quantiles": dict(zip(["q01", "q05", "q25", "q50", "q75", "q95", "q99"], q))})
        print(f"{li:>5}  " + "  ".join(f"{v:6.2f}" for v in [s.min().item(), *q, s.max().item()]))
    print("c      scores < -c   mean TV(softmax, 2Quad)   2Quad mass on keys softmax gives < 1%")
    for c in cs:
        st = stats[c]
        r = {"c": c, "frac_below": st["below"] / total_scores, "mean_tv": st["tv"] / rows_n, "mean_leak": st["leak"] / rows_n}
        result["by_c"].append(r)
        print(f"{c:<6} {100 * r['frac_below']:10.2f}%   {r['mean_tv']:22.3f}   {r['mean_leak']:22.3f}")
    result["2relu"] = {"mean_tv": relu_st["tv"] / rows_n, "mean_leak": relu_st["leak"] / rows_n}
    print(f"2ReLU  {'':>10}    {result['2relu']['mean_tv']:22.3f}   {result['2relu']['mean_leak']:22.3f}")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
