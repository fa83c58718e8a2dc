#!/usr/bin/env python3
"""Lower bound on the private encoder's wall time from its ring GEMMs alone, against the
0.1x-of-CrypTen budget of each row of the CrypTen comparison (eval/private/README.md).

Per encoder layer (hidden H, FFN 4H, sequence L):
  - products with a prepared weight (Q|K|V, output projection, FFN in and out): five GEMMs of
    the layer's shape in all -- per party the online e.[W]_i and the offline [A]_i.(W - B), and
    the dealer's A.B (`mpc::protocol::matmul_weights_raw`, `Dealer::correction`);
  - attention's shared x shared products (q.k^T and probabilities.V, per head): per party
    E.[B]_i + [A]_i.F, P0 also E.F, and the dealer's A.B: six GEMMs.
Each GEMM runs at the fastest rate `kd bench gemm` measured for that sequence length
(eval/bench/ring_gemm.json, packed right-hand side), so the bound is optimistic: everything
else (truncations, comparisons, LayerNorm, the PRG, channels) is taken as free.

    python3 scripts/gemm_floor.py
"""
import json

CRYPTEN = {  # (config, seq, variant): CrypTen 0.4.1 wall seconds (the figures)
    ("mini", 128, "gelu+softmax"): 5.2,
    ("mini", 128, "quad+2quad"): 1.5,
    ("base", 128, "gelu+softmax"): 35.6,
    ("base", 128, "quad+2quad"): 14.3,
    ("base", 512, "gelu+softmax"): 335.0,
    ("base", 512, "quad+2quad"): 41.5,
}
SHAPES = {"mini": (4, 256), "base": (12, 768)}


def main():
    rates = json.load(open("eval/bench/ring_gemm.json"))
    best = {}
    for r in rates:
        best[r["m"]] = max(best.get(r["m"], 0.0), r["prepacked_gops"])
    ours = {}
    for r in json.load(open("eval/private/bench.json")):
        ours[(r["config"], r["seq_len"], r["variant"])] = r["without_embedding"]
    print("| config | seq | variant | G MAC per weight pass | G MAC per attention pass | "
          "GEMM rate used (G ops/s) | GEMM floor s | 0.1x CrypTen s | floor / budget | measured s (bench.json) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (cfg, seq, var), crypten in CRYPTEN.items():
        layers, h = SHAPES[cfg]
        weight = layers * (seq * h * 3 * h + seq * h * h + 2 * seq * h * 4 * h)
        attention = layers * 2 * seq * seq * h
        rate = best.get(seq, best[max(best)]) * 1e9 / 2  # MAC/s
        floor = (5 * weight + 6 * attention) / rate
        budget = crypten / 10
        o = ours.get((cfg, seq, var))
        measured = f"{o['online_seconds'] + o['offline_seconds']:.2f}" if o else "–"
        print(f"| {cfg} | {seq} | {var} | {weight / 1e9:.2f} | {attention / 1e9:.2f} | {2 * rate / 1e9:.1f} | "
              f"{floor:.2f} | {budget:.2f} | {floor / budget:.2f} | {measured} |")


if __name__ == "__main__":
    main()
