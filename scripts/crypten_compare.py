#!/usr/bin/env python3
"""The CrypTen 0.4.1 comparison of eval/private/README.md from the benchmark JSONs.

Reads eval/private/bench.json (the full matrix) and eval/private/bench_quiet_128_run2.json (the
seq-128 rows again), both written by `bash scripts/bench_quiet.sh`, and prints the markdown
table: our wall time (online + offline, dealer included) in CrypTen's scope (encoder + pooler +
classifier, embedding output given), bytes per party, rounds, and the ratios to the CrypTen
figures measured on this machine (issue reference figures, hard-coded below); then the
Quad+2Quad-vs-exact speed-up table (measured wall time, LAN and WAN online estimates).
    python3 scripts/crypten_compare.py
"""
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (config, seq, variant) -> (seconds, MB per party, rounds or None), CrypTen 0.4.1, 2 processes.
CRYPTEN = {
    ("mini", 128, "gelu+softmax"): (5.2, 460, 785),
    ("mini", 128, "quad+2quad"): (1.5, 56, 341),
    ("base", 128, "gelu+softmax"): (35.6, 4590, 2305),
    ("base", 128, "quad+2quad"): (14.3, 960, 973),
    ("base", 512, "gelu+softmax"): (335, 34700, None),
    ("base", 512, "quad+2quad"): (41.5, 2450, None),
}


def runs():
    out = {}
    for name in ["bench.json", "bench_quiet_128_run2.json"]:
        for r in json.loads((ROOT / "eval/private" / name).read_text()):
            out.setdefault((r["config"], r["seq_len"], r["variant"]), []).append(r)
    return out


def main():
    all_runs = runs()
    print("| config | seq | variant | ours: wall s, encoder scope (online+offline) | ours: wall s, full scope "
          "| ours: MB/party | ours: rounds | CrypTen 0.4.1 | time ratio | bytes ratio | rounds ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, (cs, cmb, crounds) in CRYPTEN.items():
        rs = all_runs.get(key)
        if not rs:
            continue
        enc = [r["without_embedding"] for r in rs]
        walls = [e["online_seconds"] + e["offline_seconds"] for e in enc]
        full = statistics.mean(r["full"]["online_seconds"] + r["full"]["offline_seconds"] for r in rs)
        wall = statistics.mean(walls)
        on = statistics.mean(e["online_seconds"] for e in enc)
        off = statistics.mean(e["offline_seconds"] for e in enc)
        spread = f" [{min(walls):.2f}–{max(walls):.2f}]" if len(walls) > 1 else ""
        mb = enc[0]["bytes_per_party"] / 1e6
        rounds = enc[0]["rounds"]
        cr = f"{cs} s, {cmb} MB" + (f", {crounds} rounds" if crounds else "")
        rr = f"{rounds / crounds:.2f}" if crounds else "–"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {wall:.2f} ({on:.2f}+{off:.2f}){spread} | {full:.2f} | {mb:.0f} "
              f"| {rounds} | {cr} | {wall / cs:.2f} | {mb / cmb:.2f} | {rr} |")

    print()
    print("| config | seq | scope | Quad+2Quad speed-up, measured wall (online+offline) | LAN estimate | WAN estimate (online) |")
    print("|---|---|---|---|---|---|")
    wall = lambda x: x["online_seconds"] + x["offline_seconds"]
    lan = lambda x: x["network"]["lan"]["online_seconds"]
    wan = lambda x: x["network"]["wan"]["online_seconds"]
    bench = json.loads((ROOT / "eval/private/bench.json").read_text())
    by = {(r["config"], r["seq_len"], r["variant"]): r for r in bench}
    for cfg in ["tiny", "mini", "base"]:
        for seq in [128, 512]:
            e, q = by.get((cfg, seq, "gelu+softmax")), by.get((cfg, seq, "quad+2quad"))
            if not (e and q):
                continue
            for scope in ["without_embedding", "full"]:
                a, b = e[scope], q[scope]
                print(f"| {cfg} | {seq} | {scope} | {wall(a) / wall(b):.2f}x | {lan(a) / lan(b):.2f}x | {wan(a) / wan(b):.2f}x |")


if __name__ == "__main__":
    main()
