"""Syscalls and context switches per echo round trip, per server: what the kernel is asked to do,
which CPU time alone does not show (and which a shared machine does not blur).

    python bench/tools/echo_syscalls.py [--duration 2] [--subjects "C epoll,C uring,..."]
                                        [MODE:SIZE[:unix] ...]

Same servers, client and pinning as bench/tools/echo_floor.py (bench/suites/loop.py's
_echo_once); `perf stat` (software tracepoints only, no hardware counters needed) is attached to
the server for the client's run. Counts include the start-up and the client's connects, which
are negligible next to tens of thousands of round trips.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "suites")]

import loop as loop_suite  # noqa: E402

EVENTS = {
    "syscalls": "raw_syscalls:sys_enter",
    "epoll_wait": "syscalls:sys_enter_epoll_wait",
    "io_uring_enter": "syscalls:sys_enter_io_uring_enter",
    "recv": "syscalls:sys_enter_recvfrom",
    "recvmsg": "syscalls:sys_enter_recvmsg",
    "send": "syscalls:sys_enter_sendto",
    "sendmsg": "syscalls:sys_enter_sendmsg",
    "ctx switches": "context-switches",
}


def perf_watch(rows: dict):
    def watch(pid):
        out = tempfile.NamedTemporaryFile(prefix="cicada-perf-", suffix=".txt", delete=False)
        out.close()
        p = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out.name, "-p", str(pid),
                              "-e", ",".join(EVENTS.values())],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def done(count):
            p.send_signal(signal.SIGINT)
            p.wait(10)
            counts = {}
            with open(out.name) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and re.match(r"^\d+$", parts[0]):
                        counts[parts[2]] = int(parts[0])
            os.unlink(out.name)
            for name, ev in EVENTS.items():
                if ev in counts:
                    rows[name] = counts[ev] / count
        return done
    return watch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cases", nargs="*", default=["proto:1024", "proto:102400", "proto:1024:unix"])
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--subjects", default="C epoll,C uring,C uring-poll,uvloop,cicada")
    opts = ap.parse_args()
    worker = loop_suite._worker_path()
    client = loop_suite._build_client()
    server = loop_suite._build_server()
    if not client or not server:
        print("a C compiler is needed", file=sys.stderr)
        return 2
    try:
        for case in opts.cases:
            mode, size, *fam = case.split(":")
            print(f"{case}  (per round trip)")
            print("  " + " " * 14 + "".join(f"{n:>15s}" for n in EVENTS) + f"{'CPU us':>9s}")
            for s in opts.subjects.split(","):
                rows: dict = {}
                _, cpu, _ = loop_suite._echo_once(worker, client, s, mode,
                                                  fam[0] if fam else "tcp", int(size),
                                                  opts.duration, server, perf_watch(rows))
                print(f"  {s:14s}" + "".join(f"{rows.get(n, float('nan')):15.2f}" for n in EVENTS)
                      + f"{cpu:9.2f}", flush=True)
    finally:
        for p in (worker, client, server):
            os.unlink(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
