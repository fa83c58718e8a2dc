#!/usr/bin/env python3
"""Golden-output oracle for the Rust MiniLM/BERT forward pass (candle).

Produces
  tests/golden/minilm_parity.json            inputs + reference outputs
  tests/golden/minilm_classifier.safetensors classifier head used for the references

The reference is HuggingFace transformers' ``BertForSequenceClassification``
(eager attention) loaded from ``$KD_ASSETS/models/all-MiniLM-L6-v2``. The classifier
head is absent from that checkpoint, so transformers initialises it freshly
(normal(0, 0.02) weight, zero bias) after ``torch.manual_seed(1234)``; it is saved so
the Rust side can load exactly the same head.

Four model variants are evaluated on every batch (the MPCFormer-style approximations):

  gelu_softmax     hidden_act gelu (erf), softmax attention          (stock model)
  quad_2quad       hidden_act quad(x) = 0.125 x^2 + 0.25 x + 0.5,
                   attention 2Quad: p = (s + c)^2 * m / sum_k((s + c)^2 * m), c = 5
                   (s = unmasked scaled scores QK^T/sqrt(d_head), m = 0/1 key mask)
  relu_2relu       hidden_act relu,
                   attention 2ReLU: p = (relu(s + mask_add) + eps/L) / (sum_k relu(s + mask_add) + eps)
                   eps = 1e-12, L = padded key length, mask_add = 0 / finfo(float32).min
  gelunew_softmax  hidden_act gelu_new (tanh approximation), softmax attention

The variants are obtained by patching the stock model: each layer's
``intermediate.intermediate_act_fn`` is replaced and each layer's
``BertSelfAttention.forward`` is replaced by a re-implementation of the eager
attention of transformers 4.44.2 with a swappable normalisation. The patched path
with softmax + gelu is asserted equal (1e-6) to the unpatched stock model.

Everything runs on CPU with 2 threads, in float32 and again in float64
(``model.double()``); the Rust parity tests compare against the float64 logits.

Exact command used to generate the committed files (from the repository root):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venv/bin/python scripts/make_golden.py

Versions: python 3.11, torch 2.0.1 (CPU), transformers 4.44.2, numpy 1.26.4,
safetensors 0.8.0.
"""

import argparse
import copy
import json
import math
import os
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import BertForSequenceClassification, BertTokenizerFast  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

SEED = 1234
QUAD_C = 5.0
RELU_EPS = 1e-12
MAX_LEN = 128
N_SUMMARY = 8  # number of leading values stored for summarised tensors

VARIANTS = {
    # name: (hidden_act, softmax_act)
    "gelu_softmax": ("gelu", "softmax"),
    "quad_2quad": ("quad", "2quad"),
    "relu_2relu": ("relu", "2relu"),
    "gelunew_softmax": ("gelu_new", "softmax"),
}


# ----------------------------------------------------------------------------- data


def read_tsv(path):
    """Split on tabs, no quote handling; strips a UTF-8 BOM and the line ending."""
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if line.startswith("\ufeff"):
                line = line[1:]
            rows.append(line.split("\t"))
    return rows


def build_batches(glue_dir):
    batches = []
    sst = read_tsv(os.path.join(glue_dir, "SST-2", "dev.tsv"))[1:9]  # skip header
    batches.append(
        {"name": "sst2_dev_0_8", "task": "sst2", "text_a": [r[0] for r in sst], "text_b": None}
    )
    mrpc = read_tsv(os.path.join(glue_dir, "MRPC", "dev.tsv"))[1:9]  # skip header (BOM)
    batches.append(
        {
            "name": "mrpc_dev_0_8",
            "task": "mrpc",
            "text_a": [r[3] for r in mrpc],
            "text_b": [r[4] for r in mrpc],
        }
    )
    # Heavy padding: one side of each pair much shorter than the other, and the two rows
    # of very different total length.
    batches.append(
        {
            "name": "synthetic_pad_2",
            "task": "synthetic",
            "text_a": [
                "Yes.",
                "The committee, after a long and rather heated debate that lasted well into the "
                "night, finally agreed to postpone the vote on the new harbour bridge until spring.",
            ],
            "text_b": [
                "A small dog was running across the wet green field, chasing a bright red ball "
                "that a child had thrown towards the old stone wall near the farmhouse.",
                "No.",
            ],
        }
    )
    # Truncation: pairs longer than max_length (longest_first truncation applies).
    long_a = " ".join(
        "the quick brown fox jumps over the lazy dog number %d ." % i for i in range(12)
    )
    long_b = " ".join("a second sentence keeps going on and on , item %d ." % i for i in range(20))
    batches.append(
        {
            "name": "synthetic_trunc_2",
            "task": "synthetic",
            # row 0: both sides long and of unequal length; row 1: short a, very long b
            "text_a": [long_a, "short premise ."],
            "text_b": [long_b, long_b + " " + long_b],
        }
    )
    return batches


def tokenize(tok, batch):
    if batch["text_b"] is None:
        enc = tok(
            batch["text_a"],
            max_length=MAX_LEN,
            truncation="longest_first",
            padding="longest",
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
    else:
        enc = tok(
            batch["text_a"],
            batch["text_b"],
            max_length=MAX_LEN,
            truncation="longest_first",
            padding="longest",
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
    return enc["input_ids"], enc["token_type_ids"], enc["attention_mask"]


# ----------------------------------------------------------------------------- patches


class Quad(nn.Module):
    """MPCFormer 'quad' GeLU replacement: 0.125 x^2 + 0.25 x + 0.5."""

    def forward(self, x):
        return 0.125 * x * x + 0.25 * x + 0.5


def make_act(name):
    if name == "quad":
        return Quad()
    if name == "relu":
        return nn.ReLU()
    return ACT2FN[name]  # "gelu" -> GELUActivation (erf), "gelu_new" -> tanh approximation


def patched_self_attention_forward(
    self,
    hidden_states,
    attention_mask=None,
    head_mask=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    past_key_value=None,
    output_attentions=False,
):
    """Eager BertSelfAttention.forward (transformers 4.44.2, encoder-only, absolute
    positions) with the softmax swapped according to ``self._kd_softmax_act``."""
    assert encoder_hidden_states is None and past_key_value is None and not self.is_decoder
    assert self.position_embedding_type == "absolute"

    query_layer = self.transpose_for_scores(self.query(hidden_states))
    key_layer = self.transpose_for_scores(self.key(hidden_states))
    value_layer = self.transpose_for_scores(self.value(hidden_states))

    scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
    scores = scores / math.sqrt(self.attention_head_size)  # [B, H, Lq, Lk], unmasked
    if getattr(self, "_kd_capture", None) is not None:
        self._kd_capture["scores"] = scores.detach().clone()

    act = self._kd_softmax_act
    if act == "softmax":
        masked = scores + attention_mask if attention_mask is not None else scores
        probs = nn.functional.softmax(masked, dim=-1)
    elif act == "2quad":
        # m: 0/1 key mask [B, 1, 1, Lk], recovered from the additive mask (0 = keep).
        if attention_mask is None:
            m = torch.ones_like(scores[..., :1, :1, :])
        else:
            m = (attention_mask == 0).to(scores.dtype)
        q = (scores + QUAD_C) ** 2 * m
        probs = q / q.sum(dim=-1, keepdim=True)
    elif act == "2relu":
        if attention_mask is None:
            masked = scores
        else:
            m = (attention_mask == 0).to(scores.dtype)
            masked = scores + (1.0 - m) * torch.finfo(torch.float32).min
        r = torch.relu(masked)
        L = scores.shape[-1]
        probs = (r + RELU_EPS / L) / (r.sum(dim=-1, keepdim=True) + RELU_EPS)
    else:
        raise ValueError(act)

    probs = self.dropout(probs)
    if head_mask is not None:
        probs = probs * head_mask

    context = torch.matmul(probs, value_layer)
    context = context.permute(0, 2, 1, 3).contiguous()
    context = context.view(context.size()[:-2] + (self.all_head_size,))
    return (context, probs) if output_attentions else (context,)


def patch_model(model, hidden_act, softmax_act):
    """Return a deep copy of ``model`` with the requested activation / attention norm."""
    m = copy.deepcopy(model)
    for layer in m.bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = make_act(hidden_act)
        sa = layer.attention.self
        sa._kd_softmax_act = softmax_act
        sa._kd_capture = None
        sa.forward = types.MethodType(patched_self_attention_forward, sa)
    m.config.hidden_act = hidden_act
    return m


# ----------------------------------------------------------------------------- run


@torch.no_grad()
def run_model(model, ids, tt, am):
    """Returns logits, pooled output, hidden states (7), layer-0 scaled scores."""
    pooled = {}
    h = model.bert.pooler.register_forward_hook(lambda mod, inp, out: pooled.__setitem__("p", out))
    sa0 = model.bert.encoder.layer[0].attention.self
    cap = {}
    if hasattr(sa0, "_kd_softmax_act"):
        sa0._kd_capture = cap
    try:
        out = model(
            input_ids=ids, token_type_ids=tt, attention_mask=am, output_hidden_states=True
        )
    finally:
        h.remove()
        if hasattr(sa0, "_kd_capture"):
            sa0._kd_capture = None
    return out.logits, pooled["p"], out.hidden_states, cap.get("scores")


def flist(t):
    return [[float(v) for v in row] for row in t.tolist()]


def summarise(out64, out32, am):
    logits64, pooled64, hs64, scores64 = out64
    logits32 = out32[0]
    mask = am.to(torch.float64)[:, :, None]  # [B, L, 1]
    n_real = float(mask.sum()) * hs64[0].shape[-1]
    return {
        "logits_f32": flist(logits32),
        "logits_f64": flist(logits64),
        "pooled_f64": flist(pooled64[:, :N_SUMMARY]),
        "hidden_cls_f64": [flist(h[:, 0, :N_SUMMARY]) for h in hs64],
        "hidden_mean_abs_f64": [float((h.abs() * mask).sum() / n_real) for h in hs64],
        "attn_scores_l0_f64": flist(scores64[:, 0, 0, :N_SUMMARY]),
    }


def main():
    assets = os.environ.get("KD_ASSETS", "/work/shared")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(assets, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--glue", default=os.path.join(assets, "data", "glue"))
    ap.add_argument("--out-dir", default="tests/golden")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    tok = BertTokenizerFast.from_pretrained(args.model)
    torch.manual_seed(SEED)
    model = BertForSequenceClassification.from_pretrained(
        args.model, num_labels=2, attn_implementation="eager"
    )
    model.eval()
    assert model.config.hidden_act == "gelu"
    assert model.config._attn_implementation == "eager"

    os.makedirs(args.out_dir, exist_ok=True)
    head = {
        "classifier.weight": model.classifier.weight.detach().clone().contiguous().float(),
        "classifier.bias": model.classifier.bias.detach().clone().contiguous().float(),
    }
    assert tuple(head["classifier.weight"].shape) == (2, 384)
    assert float(head["classifier.bias"].abs().max()) == 0.0
    save_file(
        head,
        os.path.join(args.out_dir, "minilm_classifier.safetensors"),
        # a single metadata key: safetensors stores metadata in a hash map, so several
        # keys would be written in a random order and the file would not be byte-stable
        metadata={"generator": "scripts/make_golden.py seed=%d" % SEED},
    )

    batches = build_batches(args.glue)
    tensors = []
    for b in batches:
        ids, tt, am = tokenize(tok, b)
        assert ids.shape[1] <= MAX_LEN
        tensors.append((ids, tt, am))
        b["input_ids"] = ids.tolist()
        b["token_type_ids"] = tt.tolist()
        b["attention_mask"] = am.tolist()

    # Stock references (unpatched), used to validate the patch.
    model64 = copy.deepcopy(model).double()
    stock = [
        (run_model(model, *t), run_model(model64, *t)) for t in tensors
    ]

    variants = {}
    for vname, (hidden_act, softmax_act) in VARIANTS.items():
        p32 = patch_model(model, hidden_act, softmax_act)
        p64 = patch_model(model64, hidden_act, softmax_act)
        outputs = []
        for b, t, (s32, s64) in zip(batches, tensors, stock):
            o32 = run_model(p32, *t)
            o64 = run_model(p64, *t)
            for o in (o32, o64):
                assert torch.isfinite(o[0]).all(), (vname, b["name"])
            if vname == "gelu_softmax":
                for ref, got in ((s32, o32), (s64, o64)):
                    assert torch.allclose(ref[0], got[0], atol=1e-6, rtol=0), "logits"
                    assert torch.allclose(ref[1], got[1], atol=1e-6, rtol=0), "pooled"
                    for a, c in zip(ref[2], got[2]):
                        assert torch.allclose(a, c, atol=1e-6, rtol=0), "hidden"
            # float32 vs float64 sanity (loose: 2quad amplifies rounding)
            diff = float((o32[0].double() - o64[0]).abs().max())
            print(f"{vname:16s} {b['name']:18s} max|f32-f64| logits = {diff:.3e}", file=sys.stderr)
            entry = {"batch": b["name"]}
            entry.update(summarise(o64, o32, t[2]))
            entry["max_abs_diff_f32_f64"] = diff
            outputs.append(entry)
        variants[vname] = {"hidden_act": hidden_act, "softmax_act": softmax_act, "outputs": outputs}

    cmd = "HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 /work/venv/bin/python " + " ".join(
        ["scripts/make_golden.py"] + sys.argv[1:]
    )
    doc = {
        "generator": "scripts/make_golden.py",
        "command": cmd,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "model": "all-MiniLM-L6-v2",
        "seed": SEED,
        "num_labels": 2,
        "quad_c": QUAD_C,
        "relu_eps": RELU_EPS,
        "max_length": MAX_LEN,
        "notes": {
            "hidden_states": "index 0 = embeddings LayerNorm output, j = output of layer j (1..6)",
            "attn_scores_l0_f64": "layer 0, head 0, query token 0, keys 0..7: QK^T/sqrt(32) before the "
            "additive mask (pad keys keep their unmasked value)",
            "hidden_mean_abs_f64": "mean |h| over real (attention_mask=1) tokens and all 384 dims of the batch",
            "summaries": "first 8 values (pooled, hidden_cls, attn_scores_l0)",
            "classifier": "tests/golden/minilm_classifier.safetensors (classifier.weight [2,384], classifier.bias [2])",
        },
        "batches": [
            {
                k: b[k]
                for k in (
                    "name",
                    "task",
                    "text_a",
                    "text_b",
                    "input_ids",
                    "token_type_ids",
                    "attention_mask",
                )
            }
            for b in batches
        ],
        "variants": variants,
    }
    path = os.path.join(args.out_dir, "minilm_parity.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    for name in ("minilm_parity.json", "minilm_classifier.safetensors"):
        os.chmod(os.path.join(args.out_dir, name), 0o644)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
