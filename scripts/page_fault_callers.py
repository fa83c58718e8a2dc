#!/usr/bin/env python3
"""Who makes the kernel zero fresh pages: reads `perf script` output of a call-graph profile on
stdin, keeps the samples whose stack contains clear_page_erms, and counts them by the first
user-space frames above the page fault, grouped into model set-up, the dealer's PRG output and
the rest.
    perf record -F 49 --call-graph dwarf,16384 -o perf.data kd bench private --preset base \
        --seq-len 128 --variants quad+2quad --out /tmp/b.json
    perf script -i perf.data | python3 scripts/page_fault_callers.py
"""
import collections
import sys

SETUP = ("prepare_weight", "share_weights", "PrivateLayer::prepare", "PrivateBert::prepare",
         "share_public", "checkpoint::init_tensor", "ModelDir::random", "Var::set", "to_cpu_storage")
DEALER = ("Dealer::correction", "DealerLink::fetch")


def samples(lines):
    block = []
    for line in lines:
        if line.strip():
            block.append(line.strip())
        elif block:
            yield block
            block = []
    if block:
        yield block


def main():
    total, groups, callers = 0, collections.Counter(), collections.Counter()
    for block in samples(sys.stdin):
        frames = [f.split(None, 1)[1] if " " in f else f for f in block[1:]]
        if not frames or "clear_page_erms" not in frames[0]:
            continue
        total += 1
        above = []
        seen = False
        for fr in frames:
            if "asm_exc_page_fault" in fr:
                seen = True
            elif seen and "[kernel" not in fr:
                above.append(fr.split("+0x")[0].strip())
        key = " <- ".join(above[:3])
        callers[key] += 1
        stack = " ".join(above)
        if any(s in stack for s in SETUP):
            groups["model set-up"] += 1
        elif any(s in stack for s in DEALER):
            groups["dealer PRG output"] += 1
        else:
            groups["other (rayon kernels, allocator)"] += 1
    print(f"{total} samples in clear_page_erms")
    for g, n in groups.most_common():
        print(f"  {g}: {n} ({100 * n / max(total, 1):.0f}%)")
    print("top callers:")
    for k, n in callers.most_common(10):
        print(f"  {n} {k[:160]}")


if __name__ == "__main__":
    main()
