"""Code lines a request runs in cicada's C core, and how many miss the last-level cache, per
function: read from a callgrind file made with per-instruction data, e.g.

    MW_PROFILE_VALGRIND_ARGS=--dump-instr=yes MW_PROFILE_KEEP=/tmp/one \\
        python bench/mw_profile.py --server-cache cicada 1
    python bench/tools/cg_lines.py /tmp/one.server [BASE.server] [--requests N] [--so PATH]

Under the server a layer costs its cold code lines, not its instructions (docs/middleware.md):
every line of _core a request runs is most often a last-level miss. Functions are the shared
object's own symbols (nm), so a function's `.cold` part (what the compiler moved out of the way)
is listed apart from its hot part. With BASE (the same made for another app or build), each row
is the difference. N is the number of requests in the file (mw_profile's --server-cache: 1000).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import re
import subprocess
from pathlib import Path


def _symbols(so: Path) -> tuple[list[int], list[tuple[int, int, str]]]:
    out = subprocess.run(["nm", "-S", str(so)], capture_output=True, text=True, check=True).stdout
    syms = sorted((int(a, 16), int(s, 16), n) for a, s, t, n in
                  (line.split() for line in out.splitlines() if len(line.split()) == 4)
                  if t in "tT")
    return [s[0] for s in syms], syms


def _costs(path: Path) -> dict[int, list[int]]:
    """Self Ir and ILmr of each instruction address of the _core object in a callgrind file."""
    names: dict[str, str] = {}
    events: list[str] = []
    ob, skip, last = "", False, [0, 0]
    cost: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])

    def name(spec: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if m and m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), spec) if m else spec

    def position(tok: str, i: int) -> int:
        if tok == "*":
            return last[i]
        return last[i] + int(tok, 0) if tok[0] in "+-" else int(tok, 0)

    for line in path.open(errors="replace"):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("ob="):
            ob = name(line[3:].strip())
        elif line.startswith("cob="):
            name(line[4:].strip())
        elif line.startswith("calls="):
            skip = True  # the next cost line is the call's inclusive cost, not ours
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            tok = line.split()
            last[:] = [position(tok[0], 0), position(tok[1], 1)]
            if skip:
                skip = False
            elif "_core" in ob:
                ev = dict(zip(events, map(int, tok[2:])))
                c = cost[last[0]]
                c[0] += ev.get("Ir", 0)
                c[1] += ev.get("ILmr", 0)
    if "ILmr" not in events:
        raise SystemExit(f"{path}: no ILmr (make it with --server-cache)")
    return cost


def per_symbol(path: Path, so: Path, requests: int) -> dict[str, tuple[float, float, int]]:
    """symbol -> (ILmr, Ir) per request and the 64-byte lines run on every request."""
    starts, syms = _symbols(so)
    rows: dict[str, list] = collections.defaultdict(lambda: [0, 0, set()])
    for addr, (ir, lm) in _costs(path).items():
        i = bisect.bisect_right(starts, addr) - 1
        sym = syms[i][2] if i >= 0 and addr < syms[i][0] + syms[i][1] else "?"
        row = rows[sym]
        row[0] += lm
        row[1] += ir
        if ir >= requests:
            row[2].add(addr // 64)
    return {s: (lm / requests, ir / requests, len(lines)) for s, (lm, ir, lines) in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("base", type=Path, nargs="?")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--so", type=Path, help="the _core extension the file ran (default: imported)")
    args = ap.parse_args()
    so = args.so
    if so is None:
        import cicada._core

        so = Path(cicada._core.__file__)
    rows = per_symbol(args.file, so, args.requests)
    if args.base:
        base = per_symbol(args.base, so, args.requests)
        rows = {s: tuple(a - b for a, b in zip(rows.get(s, (0, 0, 0)), base.get(s, (0, 0, 0))))
                for s in set(rows) | set(base)}
    print(f"{'ILmr':>8} {'Ir':>8} {'lines':>6}  function   (per request)")
    for sym, (lm, ir, lines) in sorted(rows.items(), key=lambda kv: -abs(kv[1][0])):
        if abs(lm) >= 0.5:
            print(f"{lm:8.1f} {ir:8.0f} {lines:6d}  {sym}")
    tot = [sum(r[i] for r in rows.values()) for i in range(3)]
    print(f"{tot[0]:8.1f} {tot[1]:8.0f} {tot[2]:6d}  all of _core")


if __name__ == "__main__":
    main()
