#!/usr/bin/env python3
"""Same-sitting comparison of two executor schedules from `kd bench private` JSONs.

Reads eval/private/schedule_ab/{old,new}_*.json, written by running the two binaries
alternately on a quiet machine (commands in eval/private/schedule_ab/README.md), and prints
per (config, seq, variant), encoder scope: rounds, MB per party, measured wall (online +
offline, every run) and the LAN/WAN online estimates of each binary.
    python3 scripts/schedule_ab.py
"""
import json
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "eval/private/schedule_ab"


def load(tag):
    out = {}
    for f in sorted(DIR.glob(f"{tag}_*.json")):
        for r in json.loads(f.read_text()):
            out.setdefault((r["config"], r["seq_len"], r["variant"]), []).append(r["without_embedding"])
    return out


def main():
    old, new = load("old"), load("new")
    print("| config | seq | variant | rounds (old → new) | MB/party (old → new) | wall s, each run (old) | wall s, each run (new) "
          "| LAN est. s (old → new) | WAN est. s (old → new) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(old, key=lambda k: (k[0] != "mini", k[1], k[2])):
        o, n = old[key], new.get(key)
        if not n:
            continue
        walls = lambda rs: ", ".join(f"{r['online_seconds'] + r['offline_seconds']:.2f}" for r in rs)
        net = lambda r, p: r["network"][p]["online_seconds"]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {o[0]['rounds']} → {n[0]['rounds']} "
              f"| {o[0]['bytes_per_party'] / 1e6:.1f} → {n[0]['bytes_per_party'] / 1e6:.1f} | {walls(o)} | {walls(n)} "
              f"| {net(o[0], 'lan'):.2f} → {net(n[0], 'lan'):.2f} | {net(o[0], 'wan'):.2f} → {net(n[0], 'wan'):.2f} |")


if __name__ == "__main__":
    main()
