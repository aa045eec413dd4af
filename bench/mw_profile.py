"""Per-request cost of middleware layers, for profiling (not a suite): runs the in-process
driver of bench/suites/middleware.py for N requests of one (kind, layers) app.

    python bench/mw_profile.py KIND LAYERS N         # plain run (use under valgrind/perf)
    python bench/mw_profile.py --callgrind KIND LAYERS   # instructions/request via callgrind
    python bench/mw_profile.py --cprofile KIND LAYERS N  # cProfile of N requests

--callgrind runs valgrind twice (N=1000 and N=3000 requests) and prints the difference / 2000,
so start-up and warm-up cancel out; it does so for MW_PROFILE_LAYOUTS (default 3) memory layouts
and prints the mean (see callgrind()).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def run(kind: str, layers: int, n: int) -> None:
    # --callgrind's layouts: small objects allocated before the app is imported shift where its
    # interned names land, hence which type-attribute cache entries collide (see callgrind())
    pad = [("%d" % j) * (1 + j % 9) for j in range(int(os.environ.get("MW_PROFILE_LAYOUT", "0")) * 37)]
    from bench.apps.mw_app import SCOPE, make_app, receive, send

    app = make_app(kind, layers)

    async def main():
        for _ in range(300):
            await app(dict(SCOPE), receive, send)
        # the app's and the interpreter's long-lived objects out of the collector's way: whether a
        # full collection of them falls inside the measured requests varied by ~0.4% per request
        gc.collect()
        gc.freeze()
        for _ in range(n):
            await app(dict(SCOPE), receive, send)

    del pad
    loop = os.environ.get("MW_PROFILE_LOOP", "uvloop")
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def callgrind(kind: str, layers: int, keep: str | None = None, layouts: int = 3) -> float:
    """Instructions per request, the mean over `layouts` memory layouts.

    CPython's type-attribute cache is indexed by the address of the attribute's name, so where
    the interned names land decides which lookups collide and miss on every request: one build
    or environment against another moved a result by up to ~0.5% (~2k instructions per request)
    with no change to the code measured. Averaging over a few layouts evens that out."""
    values = []
    setarch = ["setarch", "-R"] if shutil.which("setarch") else []
    for layout in range(layouts):
        totals = []
        for n in (1000, 3000):
            with tempfile.TemporaryDirectory() as tmp:
                out = f"{keep}.{layout}.{n}" if keep else os.path.join(tmp, "cg.out")
                # setarch -R: no address randomisation, so a layout repeats run to run
                subprocess.run(setarch + ["valgrind", "--tool=callgrind",
                                          f"--callgrind-out-file={out}", sys.executable,
                                          __file__, kind, str(layers), str(n)],
                               check=True, capture_output=True,
                               env={**os.environ, "PYTHONHASHSEED": "0",
                                    "MW_PROFILE_LAYOUT": str(layout)})
                text = Path(out).read_text(errors="replace")
                m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
                    r"^totals:\s+(\d+)", text, re.M)
                totals.append(int(m.group(1)))
        values.append((totals[1] - totals[0]) / 2000)
    if len(values) > 1:
        print(f"  ({kind} {layers}: per layout " + ", ".join(f"{v:,.0f}" for v in values) + ")",
              file=sys.stderr)
    return sum(values) / len(values)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "--callgrind":
        keep = os.environ.get("MW_PROFILE_KEEP")
        layouts = int(os.environ.get("MW_PROFILE_LAYOUTS", "3"))
        n = callgrind(args[1], int(args[2]), keep, layouts)
        print(f"{args[1]} {args[2]}: {n:,.0f} instr/request")
    elif args[0] == "--cprofile":
        import cProfile
        import pstats

        cProfile.run(f"run({args[1]!r}, {int(args[2])}, {int(args[3])})", "/tmp/mw.prof")
        pstats.Stats("/tmp/mw.prof").sort_stats("tottime").print_stats(30)
    else:
        run(args[0], int(args[1]), int(args[2]))
