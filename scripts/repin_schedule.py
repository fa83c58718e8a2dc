#!/usr/bin/env python3
"""Re-pin tests/mpc_schedule.rs after an intended schedule change: runs the test, takes the
measured table from its failure message, writes it with the version given (which must match
mpc::SCHEDULE_VERSION).  Usage: python3 scripts/repin_schedule.py VERSION"""
import re, subprocess, sys

version = int(sys.argv[1])
out = subprocess.run(["cargo", "test", "--release", "--test", "mpc_schedule"], capture_output=True, text=True).stdout
m = re.search(r"pin this table:\n(.*?)\n\n", out, re.S)
if not m:
    sys.exit("no table in the test's output (does it pass already?)\n" + out[-2000:])
lines = m.group(1).strip("\n").split("\n")
body = "\\n\\\n".join(lines) + "\\n"
path = "tests/mpc_schedule.rs"
src = open(path).read()
new = re.sub(r'const PINNED: \(u32, &str\) = \(\n    \d+,\n    ".*?",\n\);',
             lambda _: f'const PINNED: (u32, &str) = (\n    {version},\n    "{body}",\n);', src, flags=re.S)
assert new != src, "PINNED not found"
open(path, "w").write(new)
print(f"pinned {len(lines)} lines at version {version}")
