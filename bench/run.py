"""`make bench` entry point: runs the named suites (all by default) and writes their reports.

    python bench/run.py [SUITE ...] [--runs N] [--duration SECONDS]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import suites  # noqa: E402


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(suites.__path__))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("suites", nargs="*", default=names, help=f"any of {names}")
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (the median is kept)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    opts = ap.parse_args()
    for name in opts.suites:
        mod = importlib.import_module(f"suites.{name}")
        print(f"== {name}", flush=True)
        results = mod.collect(opts)
        cmd = f"make bench BENCH_ARGS='{name} --runs {opts.runs} --duration {opts.duration:g}'"
        notes = getattr(mod, "NOTES", "")
        if hasattr(mod, "summary"):  # optional: text computed from this run (ratios, targets)
            notes = "\n\n".join(x for x in (notes, mod.summary(results)) if x)
        path = harness.write_report(name, mod.TITLE, results, cmd, notes)
        print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
