"""Server CPU per echo round trip: the loops next to plain C echo servers (epoll and io_uring).

    python bench/tools/echo_floor.py [--runs 5] [--duration 2]
        [--subjects "C epoll,C uring,C uring-poll,uvloop,cicada"] [--json OUT] [MODE:SIZE[:unix] ...]

Defaults to the rows issue 5 misses: proto:1024 proto:102400 proto:1024:unix proto:102400:unix
streams:1024. A subject "C <mode>" is bench/tools/echo_server.c in that mode (epoll, uring,
uring-coop, uring-plain, uring-poll, uring-skip); the C servers echo the same way whatever the
row's MODE (Protocol or streams is a loop-side distinction). Same server/client pinning, client
(echo_client.c) and helpers as bench/suites/loop.py's echo rows; runs are interleaved (run r of
every subject before run r+1 of any) and the median is kept, since the machine is shared; each
subject is also compared with the first one round by round (median of the paired differences).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "suites")]

import loop as loop_suite  # noqa: E402

DEFAULT_CASES = ["proto:1024", "proto:102400", "proto:1024:unix", "proto:102400:unix",
                 "streams:1024"]


def paired(runs: dict, ref: str, s: str) -> str:
    """Median over rounds of (s - ref) within the same round: load that drifts between rounds
    cancels out better than in the difference of the two medians."""
    a, b = runs[ref]["cpu"], runs[s]["cpu"]
    if s == ref or not a or len(a) != len(b):
        return ""
    d = statistics.median(y - x for x, y in zip(a, b))
    r = statistics.median(y / x - 1 for x, y in zip(a, b))
    return f"  vs {ref} {d:+.2f} us ({r * 100:+.0f}%)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cases", nargs="*", default=DEFAULT_CASES)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--subjects", default="C epoll,C uring,C uring-poll,uvloop,cicada")
    ap.add_argument("--json", help="also write every run's figures here")
    opts = ap.parse_args()
    subjects = [s.strip() for s in opts.subjects.split(",") if s.strip()]
    worker = loop_suite._worker_path()
    client = loop_suite._build_client()
    server = loop_suite._build_server()
    if not client or not server:
        print("a C compiler is needed for bench/tools/echo_client.c and echo_server.c",
              file=sys.stderr)
        return 2
    report = {}
    try:
        for case in opts.cases:
            mode, size, *fam = case.split(":")
            family = fam[0] if fam else "tcp"
            runs = {s: {"cpu": [], "rate": [], "client": []} for s in subjects}
            for _ in range(opts.runs):
                for s in subjects:
                    try:
                        r, c, cl = loop_suite._echo_once(worker, client, s, mode, family,
                                                         int(size), opts.duration, server)
                    except RuntimeError as e:  # e.g. io_uring refused: say so, keep the rest
                        print(f"{case} {s}: {str(e).strip()}", file=sys.stderr)
                        continue
                    runs[s]["cpu"].append(c)
                    runs[s]["rate"].append(r)
                    if cl is not None:
                        runs[s]["client"].append(cl)
            report[case] = runs
            print(f"{case}  (server CPU us per round trip, median of {opts.runs}; "
                  "rate; client CPU)", flush=True)
            base = runs.get("uvloop", {}).get("cpu")
            for s in subjects:
                v = runs[s]
                if not v["cpu"]:
                    print(f"  {s:14s} unavailable")
                    continue
                med = statistics.median(v["cpu"])
                ratio = f"  uvloop/this {statistics.median(base) / med:.2f}x" if base else ""
                cl = f"{statistics.median(v['client']):.2f}" if v["client"] else "-"
                spread = " ".join(f"{x:.2f}" for x in v["cpu"])
                print(f"  {s:14s} {med:6.2f} us  {statistics.median(v['rate']):>9,.0f} rt/s  "
                      f"client {cl} us{ratio}{paired(runs, subjects[0], s)}  [{spread}]",
                      flush=True)
    finally:
        os.unlink(worker)
        os.unlink(client)
        os.unlink(server)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
