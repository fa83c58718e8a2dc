#!/usr/bin/env python3
"""Interim numbers of an unfinished `kd private-eval` from its journal (OUTPUT.rows.jsonl):
agreement with the plaintext model, max |logit difference|, accuracy on the rows done so far,
and mean rounds / bytes / seconds per row. The plaintext logits come from `kd eval` on the same
rows with `--predictions` (same --split/--limit/--sample/--sample-seed/--max-seq-len).

    python3 scripts/journal_summary.py eval/private/teachers/imdb.json.rows.jsonl /tmp/imdb_plain.csv
"""
import csv
import json
import sys


def argmax(v):
    return max(range(len(v)), key=lambda i: v[i])


def main(journal, plain_csv):
    rows = list(csv.reader(open(plain_csv)))
    header, rows = rows[0], rows[1:]
    first = header.index("logit_0") if "logit_0" in header else 3
    lines = open(journal).read().splitlines()
    head = json.loads(lines[0])["journal"]
    if head["rows"] != len(rows):
        sys.exit(f"{journal} covers {head['rows']} rows, {plain_csv} has {len(rows)}")
    done = [json.loads(l) for l in lines[1:] if l.strip()]
    if not done:
        sys.exit(f"{journal}: no rows yet")
    agree = maxd = hit_p = hit_pl = 0
    for d in done:
        r = rows[d["row"]]
        pl = [float(x) for x in r[first:]]
        pv = d["logits"]
        agree += argmax(pv) == argmax(pl)
        maxd = max(maxd, max(abs(a - b) for a, b in zip(pv, pl)))
        if r[1] != "":
            hit_p += argmax(pv) == int(r[1])
            hit_pl += argmax(pl) == int(r[1])
    n = len(done)
    mean = lambda k: sum(d["stats"][k] for d in done) / n
    print(json.dumps({
        "rows_done": n, "rows": len(rows), "agreement": agree / n, "max_abs_logit_diff": maxd,
        "accuracy_private": hit_p / n, "accuracy_plaintext_same_rows": hit_pl / n,
        "rounds": mean("rounds"), "bytes_per_party": mean("bytes_per_party"), "seconds": mean("seconds"),
    }, indent=2))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
