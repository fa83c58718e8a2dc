#!/usr/bin/env python3
"""Golden oracle for fine-tuning *mechanics*: a few AdamW steps of HF BertForSequenceClassification.

Dev-set metrics after a full fine-tune differ between any two frameworks by seed noise (data
order, dropout masks, head init), which on MRPC/RTE is several points. This oracle removes the
noise: the same start (all-MiniLM-L6-v2 + the head in tests/golden/minilm_classifier.safetensors),
dropout off, the same fixed batches, and the recipe `kd finetune` implements —
torch.optim.AdamW(betas 0.9/0.999, eps 1e-8, weight decay 0.01 except biases and LayerNorm
weights), global grad-norm clipping at 1.0, linear warmup/decay schedule
(get_linear_schedule_with_warmup). tests/train_parity.rs replays it and compares losses, logits
and parameters.

Batches: SST-2 train rows [0,8), [8,16), [16,24), [0,8) again — each padded to its longest.
Schedule: lr 1e-4, 1 warmup step of 4 total steps. The large LR makes mistakes visible.

Command (repository root; torch 2.0.1, transformers 4.44.2, CPU, float32):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venv/bin/python scripts/make_train_golden.py
"""

import json
import os
import shlex
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import BertForSequenceClassification, BertTokenizerFast  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ASSETS = os.environ.get("KD_ASSETS", os.path.join(ROOT, "..", "shared"))
MODEL = os.path.join(ASSETS, "models", "all-MiniLM-L6-v2")
SST2 = os.path.join(ASSETS, "data", "glue", "SST-2", "train.tsv")
LR, STEPS, WARMUP = 1e-4, 4, 1
PROBE_PARAMS = [
    "classifier.weight",
    "bert.pooler.dense.bias",
    "bert.encoder.layer.5.output.LayerNorm.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.embeddings.word_embeddings.weight",
]


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    with open(SST2, encoding="utf-8") as f:
        next(f)
        for i, line in enumerate(f):
            if i >= 24:
                break
            text, label = line.rstrip("\n").split("\t")
            rows.append((text, int(label)))
    order = [list(range(0, 8)), list(range(8, 16)), list(range(16, 24)), list(range(0, 8))]

    tok = BertTokenizerFast.from_pretrained(MODEL)
    model = BertForSequenceClassification.from_pretrained(
        MODEL, num_labels=2, attn_implementation="eager",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    head = load_file(os.path.join(ROOT, "tests", "golden", "minilm_classifier.safetensors"))
    with torch.no_grad():
        model.classifier.weight.copy_(head["classifier.weight"])
        model.classifier.bias.copy_(head["classifier.bias"])
    model.train()  # dropout probabilities are 0, so train mode is deterministic

    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = get_linear_schedule_with_warmup(opt, WARMUP, STEPS)

    def enc(idx):
        b = tok([rows[i][0] for i in idx], truncation="longest_first", max_length=128, padding="longest",
                return_tensors="pt")
        return b, torch.tensor([rows[i][1] for i in idx])

    steps = []
    for s, idx in enumerate(order):
        b, y = enc(idx)
        out = model(**b, labels=y)
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"step": s, "rows": idx, "loss": float(out.loss), "grad_norm": float(norm), "lr": lr})

    model.eval()
    with torch.no_grad():
        b, _ = enc(list(range(0, 8)))
        logits = model(**b).logits
    params = {n: p.detach().flatten()[:16].tolist() for n, p in model.named_parameters() if n in PROBE_PARAMS}
    out = {
        "generator": "scripts/make_train_golden.py",
        "command": "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 " + " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "torch": torch.__version__, "lr": LR, "steps_total": STEPS, "warmup_steps": WARMUP,
        "weight_decay": 0.01, "max_grad_norm": 1.0,
        "steps": steps, "probe_logits_after": logits.tolist(), "params_after_first16": params,
    }
    path = os.path.join(ROOT, "tests", "golden", "minilm_train_steps.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(steps), logits[0].tolist())


if __name__ == "__main__":
    main()
