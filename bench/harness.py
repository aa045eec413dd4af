"""The one benchmark harness: side-by-side runs, medians, wrk, CPU pinning, Markdown + PNG reports.

Suites live in bench/suites/<name>.py and expose `collect(opts) -> list[Result]`. This module
never decides what is fast; it only measures, takes medians and writes what it measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The server side gets one core and the load generator the other, so the two never compete.
SERVER_CPU = "0"
CLIENT_CPU = "1"


@dataclasses.dataclass
class Result:
    scenario: str  # e.g. "plaintext", "short GET"
    subject: str  # e.g. "cicada", "uvicorn"
    value: float  # median over runs
    unit: str  # e.g. "req/s", "MB/s", "us/req"
    runs: list[float]
    higher_is_better: bool = True
    extra: dict = dataclasses.field(default_factory=dict)  # e.g. {"p99_ms": 1.2}


def median_of(fn, runs: int) -> tuple[float, list[float]]:
    values = [fn() for _ in range(runs)]
    return statistics.median(values), values


def taskset_prefix(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and os.cpu_count() >= 2 else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {host}:{port} within {timeout}s")


@contextlib.contextmanager
def server_process(cmd: list[str], port: int, env: dict | None = None, cwd: Path | None = None):
    """Start a server pinned to SERVER_CPU, wait for its port, stop it afterwards."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        taskset_prefix(SERVER_CPU) + cmd,
        cwd=str(cwd or ROOT),
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port(port)
        except RuntimeError:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{cmd[0]} failed to start: {err}") from None
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _group_pids(pgid: int) -> list[int]:
    """Every live process in process group `pgid` (server_process starts each server as the
    leader of its own session, so this is the server and any workers it forked)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_rss_kb(pgid: int) -> int:
    """Resident memory (VmRSS, kB) summed over process group `pgid`."""
    total = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds consumed so far by process group `pgid` (all threads)."""
    ticks = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def group_cpu_ns(pgid: int) -> int:
    """Like group_cpu_seconds, in nanoseconds from the scheduler's own accounting of every live
    thread (/proc/PID/task/TID/schedstat), not clock ticks: precise enough for 1-second runs."""
    total = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
    return total


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


def wrk(url: str, connections: int = 64, duration: float = 5, threads: int = 1,
        script: str | None = None, script_args: list[str] | None = None) -> dict:
    """Run wrk pinned to CLIENT_CPU; returns req/s, p50/p99 latency (ms) and error counts.
    `script_args` go to the script's init() (after `--`)."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (make sysdeps installs it as root)")
    cmd = taskset_prefix(CLIENT_CPU) + [
        "wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
    ]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _to_ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "requests": int(done.group(1)) if done else 0,
        "p50_ms": lat.get("50", float("nan")),
        "p99_ms": lat.get("99", float("nan")),
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "raw": out,
    }


def write_report(suite: str, title: str, results: list[Result], command: str,
                 notes: str = "") -> Path:
    """Write bench/results/<suite>.md (table) and <suite>.png (grouped bars per scenario)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    subjects = list(dict.fromkeys(r.subject for r in results))
    by = {(r.scenario, r.subject): r for r in results}
    lines = [f"### {title}", "", f"Reproduce: `{command}`", ""]
    head = "| scenario | " + " | ".join(subjects) + " |"
    lines += [head, "|" + "---|" * (len(subjects) + 1)]
    for sc in scenarios:
        cells = []
        for su in subjects:
            r = by.get((sc, su))
            if r is None:
                cells.append("–")
                continue
            cell = f"{r.value:,.1f} {r.unit}" if r.value < 100 else f"{r.value:,.0f} {r.unit}"
            if "p99_ms" in r.extra:
                cell += f" (p99 {r.extra['p99_ms']:.2f} ms)"
            if r.extra.get("note"):  # free-form detail a suite wants in the cell
                cell += f" ({r.extra['note']})"
            cells.append(cell)
        lines.append(f"| {sc} | " + " | ".join(cells) + " |")
    lines += ["", f"Each cell is the median of {len(results[0].runs) if results else 0} runs.", ""]
    if notes:
        lines += [notes, ""]
    md = RESULTS / f"{suite}.md"
    md.write_text("\n".join(lines))
    _chart(suite, title, scenarios, subjects, by)
    update_readme(suite)
    return md


def update_readme(suite: str) -> None:
    """Replace the README block between <!-- bench:SUITE --> markers with the fresh report."""
    readme = ROOT / "README.md"
    start, end = f"<!-- bench:{suite} -->", f"<!-- /bench:{suite} -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return
    body = (RESULTS / f"{suite}.md").read_text().strip()
    block = f"{start}\n{body}\n\n![{suite}](bench/results/{suite}.png)\n{end}"
    head, rest = text.split(start, 1)
    readme.write_text(head + block + rest.split(end, 1)[1])


def _chart(suite, title, scenarios, subjects, by) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart written", file=sys.stderr)
        return
    units = {r.unit for r in by.values()}
    fig, axes = plt.subplots(1, len(scenarios), figsize=(max(4, 3.2 * len(scenarios)), 3.6),
                             squeeze=False)
    for ax, sc in zip(axes[0], scenarios):
        present = [su for su in subjects if (sc, su) in by]  # no zero bar for a cell not run
        vals = [by[(sc, su)].value for su in present]
        colors = ["#2a9d8f" if su.startswith("cicada") else "#8d99ae" for su in present]
        ax.bar(range(len(present)), vals, color=colors)
        ax.set_xticks(range(len(present)))
        ax.set_xticklabels(present, rotation=35, ha="right", fontsize=8)
        ax.set_title(sc, fontsize=9)
        unit = next((by[(sc, su)].unit for su in subjects if (sc, su) in by), "")
        ax.set_ylabel(unit if len(units) > 1 or ax is axes[0][0] else "", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{suite}.png", dpi=110)
    plt.close(fig)
