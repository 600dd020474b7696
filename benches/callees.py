#!/usr/bin/env python3
"""Where one function's time goes, from a `perf record -g` profile of the server.

    perf script -i DIR/perf.data -F comm,tid,ip,sym > DIR/script.txt
    python3 benches/callees.py DIR/script.txt THREAD FUNCTION [DEPTH]

THREAD is a prefix of the thread name as perf shows it (`actix-server wo`, `wardhook-store-`,
`wardhook-mirror`, ...); FUNCTION a substring of a frame's symbol
(`PreparedDelivery::new`). Prints how many of the thread's samples have FUNCTION on the stack
and, grouped by the DEPTH frames it calls (inlined frames skipped unless KEEP_INLINED=1), where
they are: the callee view `perf report` gives only per symbol, not per caller.
`benches/intake.sh profile OUT DIR` records DIR/perf.data.
"""
import collections
import os
import re
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, thread, function = sys.argv[1:4]
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    keep_inlined = os.environ.get("KEEP_INLINED") == "1"
    samples, current = [], None
    for line in open(path, errors="replace"):
        if not line.strip():
            continue
        if not line.startswith("\t"):
            current = (line[:16].strip(), [])
            samples.append(current)
            continue
        parts = line.strip().split(" ", 1)
        name = parts[1] if len(parts) > 1 else "?"
        if "(inlined)" in name and not keep_inlined:
            continue
        for _ in range(3):  # generic arguments, nested up to three deep
            name = re.sub(r"<[^<>]*>", "", name)
        current[1].append(name[:140])
    mine = [frames for comm, frames in samples if comm.startswith(thread)]
    below = collections.Counter()
    for frames in mine:
        hits = [i for i, f in enumerate(frames) if function in f]
        if hits:
            i = max(hits)  # the outermost call
            below[" > ".join(reversed(frames[max(0, i - depth):i])) or "(self)"] += 1
    total, hit = len(mine), sum(below.values())
    print(f"{thread}: {total} samples, {hit} with {function!r} on the stack "
          f"({100 * hit / max(total, 1):.1f} %)")
    for callees, n in below.most_common(40):
        print(f"{n:6d} {100 * n / max(total, 1):5.1f} %  {callees}")


if __name__ == "__main__":
    main()
