"""User-space instructions per echo round trip of the echo server, under callgrind.

    python bench/tools/echo_callgrind.py [--seconds 3] [SUBJECT:MODE:SIZE[:unix] ...]
    python bench/tools/echo_callgrind.py --call-soon [SUBJECT ...]

The second form counts instructions per callback of the suite's call_soon benchmark instead
(two runs, 100k and 300k callbacks; the difference over 200k, so start-up cancels out).

e.g. `cicada:proto:1024 uvloop:sock:102400`. The server is bench/suites/loop.py's echo server on
the given loop, run under `valgrind --tool=callgrind`; bench/tools/echo_client.c drives it. The
counters are zeroed after a warm-up run and dumped after the measured run, so the figure is
instructions (Ir) in the server process per round trip, free of start-up and of machine load
(the kernel's share of the work is not counted: compare syscalls per round trip for that).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "suites")]

import harness  # noqa: E402
import loop as loop_suite  # noqa: E402

DEFAULT = ["uvloop:proto:1024", "cicada:proto:1024", "uvloop:sock:1024", "cicada:sock:1024",
           "uvloop:proto:102400", "cicada:proto:102400", "uvloop:sock:102400",
           "cicada:sock:102400"]


def measure(worker: str, client: str, kind: str, mode: str, size: int, family: str,
            seconds: float, keep: str | None = None) -> tuple[int, float]:
    tmp = tempfile.mkdtemp(prefix="cicada-cg-")
    ready = os.path.join(tmp, "ready")
    addr = os.path.join(tmp, "sock") if family == "unix" else ["127.0.0.1", harness.free_port()]
    out = os.path.join(tmp, "cg.out")
    proc = subprocess.Popen(harness.taskset_prefix(harness.SERVER_CPU) +
                            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             sys.executable, worker, "serve", kind, mode, family, json.dumps(addr),
                             ready], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("echo server under valgrind did not start")
            time.sleep(0.05)
        where = [family, addr] if family == "unix" else [family, *map(str, addr)]
        run = harness.taskset_prefix(harness.CLIENT_CPU) + [client, *where, str(size), "8"]
        subprocess.run(run + ["1"], capture_output=True, check=True)  # warm-up
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        res = subprocess.run(run + [str(seconds)], capture_output=True, text=True, check=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        count = json.loads(res.stdout)["count"]
        total = 0
        for f in glob.glob(out + "*"):
            with open(f) as fh:
                for line in fh:
                    if line.startswith(("summary:", "totals:")):
                        total = max(total, int(line.split()[1]))
        if keep:
            for f in glob.glob(out + "*"):
                shutil.copy(f, os.path.join(keep, f"{kind}-{mode}-{size}-{family}" +
                                            os.path.basename(f)[len("cg.out"):] + ".cg"))
        return count, total / max(count, 1)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


def call_soon_instructions(worker: str, kind: str) -> float:
    totals = []
    for n in (100_000, 300_000):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg.out")
            code = (f"import sys; sys.path.insert(0, {os.path.dirname(worker)!r}); "
                    f"w = __import__({Path(worker).stem!r}); lp = w.make_loop({kind!r}); "
                    f"w.bench_call_soon(lp, 1000); w.bench_call_soon(lp, {n})")
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, "-c", code], capture_output=True, check=True)
            with open(out) as fh:
                totals.append(next(int(line.split()[1]) for line in fh
                                   if line.startswith(("summary:", "totals:"))))
    return (totals[1] - totals[0]) / 200_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cases", nargs="*", default=DEFAULT)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--keep", metavar="DIR", help="copy the callgrind output files into DIR "
                    "(for callgrind_annotate)")
    ap.add_argument("--call-soon", action="store_true", help="per-callback count instead")
    opts = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind (callgrind) is needed", file=sys.stderr)
        return 2
    worker = loop_suite._worker_path()
    if opts.call_soon:
        try:
            for kind in opts.cases if opts.cases != DEFAULT else ["uvloop", "cicada"]:
                print(f"{kind:10s} {call_soon_instructions(worker, kind):8,.0f} instructions per "
                      "call_soon callback", flush=True)
        finally:
            os.unlink(worker)
        return 0
    client = loop_suite._build_client()
    if not client:
        print("a C compiler is needed for bench/tools/echo_client.c", file=sys.stderr)
        return 2
    try:
        for case in opts.cases:
            kind, mode, size, *fam = case.split(":")
            count, per_rt = measure(worker, client, kind, mode, int(size),
                                    fam[0] if fam else "tcp", opts.seconds, opts.keep)
            print(f"{case:24s} {per_rt:10,.0f} instructions per round trip ({count} round trips)",
                  flush=True)
    finally:
        os.unlink(worker)
        os.unlink(client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
