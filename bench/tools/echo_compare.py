"""Server CPU per echo round trip for a few chosen rows of the loop suite, side by side.

    python bench/tools/echo_compare.py [--runs 3] [--duration 2] [--subjects uvloop,cicada]
                                       MODE:SIZE[:unix] ...

e.g. `streams:1024 proto:102400 proto:1024:unix`. Same server, client and pinning as
bench/suites/loop.py's echo rows (interleaved runs, median kept), without the rest of the suite:
for before/after checks while working on one path. The suite stays the figure of record.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "suites")]

import loop as loop_suite  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--subjects", default="uvloop,cicada")
    opts = ap.parse_args()
    subjects = opts.subjects.split(",")
    worker = loop_suite._worker_path()
    client = loop_suite._build_client()
    if not client:
        print("a C compiler is needed for bench/tools/echo_client.c", file=sys.stderr)
        return 2
    try:
        for case in opts.cases:
            mode, size, *fam = case.split(":")
            family = fam[0] if fam else "tcp"
            cpu = {s: [] for s in subjects}
            rate = {s: [] for s in subjects}
            for _ in range(opts.runs):
                for s in subjects:
                    r, c, _ = loop_suite._echo_once(worker, client, s, mode, family, int(size),
                                                    opts.duration)
                    cpu[s].append(c)
                    rate[s].append(r)
            med = {s: statistics.median(v) for s, v in cpu.items()}
            cells = "  ".join(f"{s} {med[s]:6.2f} us ({statistics.median(rate[s]):,.0f} rt/s)"
                              for s in subjects)
            ratio = ""
            if "uvloop" in med and "cicada" in med:
                ratio = f"  ratio {med['uvloop'] / med['cicada']:.2f}x"
            runs = " ".join(f"{v:.2f}" for v in cpu.get("cicada", []))
            print(f"{case:18s} {cells}{ratio}  [cicada runs: {runs}]", flush=True)
    finally:
        os.unlink(worker)
        os.unlink(client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
