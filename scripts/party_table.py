#!/usr/bin/env python3
"""Table of `scripts/netem.sh` results: measured wall time per query against the cost model.

    python3 scripts/party_table.py eval/party          # reads eval/party/*/{embedded,loopback,lan,wan}.json

Estimate = the formula of `src/mpc/eval.rs::estimate` (mpc-protocols.md §6.4):
    T = T_compute + rounds * RTT/2 + (bytes to the peer + bytes with the client) * 8 / bandwidth
with rounds and bytes as metered by P0 during the deployed run, and T_compute the median
loopback wall time of the same deployment (TLS, framing and process costs included; latency
and bandwidth terms are negligible on loopback). Writes table.md and table.csv next to the
model directories.

A second table predicts every deployed time from the in-process run alone: T_compute =
embedded wall time + c_io * (MB per party), where c_io (seconds per MB: TLS, framing, syscalls
and copies of the deployment) is fitted on the *other* models' loopback runs (leave one out),
so each row's prediction uses none of its own deployed measurements.
"""
import csv
import json
import statistics
import sys
from pathlib import Path

PROFILES = {"lan": (0.8e-3, 3e9), "wan": (40e-3, 200e6)}


def estimate(compute, rounds, nbytes, rtt, bw):
    return compute + rounds * rtt / 2 + nbytes * 8 / bw


def load(p):
    return json.loads(p.read_text()) if p.exists() else None


def deployed(j):
    qs = j["queries"]
    p0 = qs[0]["p0"]
    return {
        "n": len(qs),
        "wall": statistics.median(q["wall_seconds"] for q in qs),
        "walls": [q["wall_seconds"] for q in qs],
        "party": statistics.median(q["p0"]["seconds"] for q in qs),
        "rounds": p0["rounds"],
        "bytes": p0["bytes_sent"] + p0["client_bytes"],
        "seq": qs[0]["seq_len"],
        "source": j["model"]["source"],
    }


def main(root):
    root = Path(root)
    rows = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        emb = load(d / "embedded.json")
        runs = {p: load(d / f"{p}.json") for p in ["loopback", "lan", "wan"]}
        if not runs["loopback"]:
            continue
        loop = deployed(runs["loopback"])
        row = {
            "model": d.name,
            "source": loop["source"],
            "seq": loop["seq"],
            "rounds": loop["rounds"],
            "mb_per_party": loop["bytes"] / 1e6,
            "embedded_s": (emb[0]["full"]["online_seconds"] + emb[0]["full"]["offline_seconds"]) if emb else None,
            "loopback_s": loop["wall"],
            "loopback_party_s": loop["party"],
            "queries": loop["n"],
        }
        for p, (rtt, bw) in PROFILES.items():
            if runs[p]:
                r = deployed(runs[p])
                est = estimate(loop["wall"], r["rounds"], r["bytes"], rtt, bw)
                row[f"{p}_s"] = r["wall"]
                row[f"{p}_walls"] = " ".join(f"{w:.2f}" for w in r["walls"])
                row[f"{p}_est_s"] = est
                row[f"{p}_ratio"] = r["wall"] / est
        rows.append(row)
    f = lambda v, k=2: "–" if v is None else f"{v:.{k}f}"
    md = [
        "| model | seq | rounds | MB/party (peer + client) | embedded s | loopback-TLS s | LAN s (est.) | LAN measured/est. | WAN s (est.) | WAN measured/est. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['seq']} | {r['rounds']} | {f(r['mb_per_party'], 1)} | {f(r['embedded_s'])} | {f(r['loopback_s'])} | "
            f"{f(r.get('lan_s'))} ({f(r.get('lan_est_s'))}) | {f(r.get('lan_ratio'))} | "
            f"{f(r.get('wan_s'))} ({f(r.get('wan_est_s'))}) | {f(r.get('wan_ratio'))} |"
        )
    # Leave-one-out prediction from the embedded run plus a per-MB host cost.
    per_mb = {r["model"]: (r["loopback_s"] - r["embedded_s"]) / r["mb_per_party"] for r in rows if r["embedded_s"]}
    md += [
        "",
        "Predicted from the in-process run: embedded s + c_io x MB/party (c_io fitted on the other models' loopback runs) + the network terms.",
        "",
        "| model | c_io ms/MB (others) | loopback pred. / meas. | LAN pred. / meas. (meas./pred.) | WAN pred. / meas. (meas./pred.) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        others = [v for m, v in per_mb.items() if m != r["model"]]
        if not r["embedded_s"] or not others:
            continue
        c = statistics.mean(others)
        comp = r["embedded_s"] + c * r["mb_per_party"]
        r["c_io_ms_per_mb_loo"] = 1e3 * c
        r["loopback_pred_s"] = comp
        cells = []
        for p in PROFILES:
            if f"{p}_s" in r:
                pred = comp + r[f"{p}_est_s"] - r["loopback_s"]
                r[f"{p}_pred_s"] = pred
                r[f"{p}_pred_ratio"] = r[f"{p}_s"] / pred
                cells.append(f"{f(pred)} / {f(r[f'{p}_s'])} ({f(r[f'{p}_s'] / pred)})")
            else:
                cells.append("–")
        md.append(f"| {r['model']} | {f(1e3 * c)} | {f(comp)} / {f(r['loopback_s'])} | " + " | ".join(cells) + " |")
    (root / "table.md").write_text("\n".join(md) + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(root / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eval/party")
