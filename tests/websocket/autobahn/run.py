"""Runs the Autobahn WebSocket testsuite (wstest, fuzzingclient mode) against cicada and peers.

Starts each server on 127.0.0.1 with the same echo app (echo_app.py), writes the spec from
fuzzingclient.json, runs wstest over each in turn, then reads the JSON reports and prints a
table per server. Exit status: 1 when cicada has a FAILED case (behavior, or behaviorClose
FAILED, WRONG CODE or UNCLEAN), 2 when a run could not be made. Not part of `make test`: wstest
is Python 2 only and takes minutes; `make autobahn` builds its venv and calls this.

    python tests/websocket/autobahn/run.py --wstest .venv-autobahn/bin/wstest [--cases '1.*,2.*']
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BEHAVIOURS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
# behaviorClose values that the report marks as failures (the others: OK, INFORMATIONAL,
# NON-STRICT, and FAILED BY CLIENT, "it is preferred that the server close the TCP connection").
CLOSE_FAILURES = ("FAILED", "WRONG CODE", "UNCLEAN")
# The performance-heavy categories a FAST run leaves out: 9 (limits and performance: messages up
# to 16 MiB, many-frame messages) and 12/13 (permessage-deflate, ~430 cases of 1000 messages).
FAST_EXCLUDE = ["9.*", "12.*", "13.*"]

# Server name -> command (after the python executable). {port} is filled in.
SERVERS = {
    "cicada": ["-m", "cicada", "echo_app:app", "--app-dir", HERE, "--port", "{port}",
               "--no-access-log", "--log-level", "warning", "--ws-per-message-deflate", "true"],
    "uvicorn-websockets": ["-m", "uvicorn", "echo_app:app", "--app-dir", HERE, "--port", "{port}",
                           "--no-access-log", "--log-level", "warning", "--ws", "websockets",
                           "--ws-per-message-deflate", "true"],
    "uvicorn-wsproto": ["-m", "uvicorn", "echo_app:app", "--app-dir", HERE, "--port", "{port}",
                        "--no-access-log", "--log-level", "warning", "--ws", "wsproto",
                        "--ws-per-message-deflate", "true"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def cpu_seconds(pid):
    """User + system CPU time of a live process, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def split(arg):
    return [c.strip() for c in arg.split(",") if c.strip()] if arg else []


def summarize(index, agents):
    """Per agent: Counter of behavior, Counter of behaviorClose, list of non-OK cases."""
    out = {}
    for agent in agents:
        cases = index.get(agent, {})
        beh = collections.Counter(c["behavior"] for c in cases.values())
        close = collections.Counter(c["behaviorClose"] for c in cases.values())
        odd = sorted(
            ((cid, c["behavior"], c["behaviorClose"]) for cid, c in cases.items()
             if c["behavior"] != "OK" or c["behaviorClose"] not in ("OK", "INFORMATIONAL")),
            key=lambda t: [int(x) for x in t[0].split(".")],
        )
        dur = sum(c.get("duration", 0) for c in cases.values()) / 1000.0
        out[agent] = (len(cases), beh, close, odd, dur, agent)
    return out


def by_category(odd):
    """Groups non-OK case ids by their first two components, e.g. '6.4' -> ['6.4.1', ...]."""
    groups = collections.defaultdict(list)
    for cid, beh, close in odd:
        groups[(".".join(cid.split(".")[:2]), beh, close)].append(cid)
    return groups


def print_table(summary, times):
    agents = list(summary)
    w = max(14, *(len(a) for a in agents)) if agents else 14
    print()
    print("behavior".ljust(20) + "".join(a.rjust(w + 2) for a in agents))
    rows = [("cases", lambda s: s[0])]
    rows += [(b, lambda s, b=b: s[1].get(b, 0)) for b in BEHAVIOURS]
    rows += [("close " + b, lambda s, b=b: s[2].get(b, 0))
             for b in sorted({k for s in summary.values() for k in s[2]}) if b != "OK"]
    rows += [("case time (s)", lambda s: "%.1f" % s[4])]
    if times:
        def col(i):
            return lambda s: "%.1f" % times[s[5]][i] if times.get(s[5], (None,) * 3)[i] else "-"
        rows += [("wall time (s)", col(0)), ("wstest CPU (s)", col(1)),
                 ("server CPU (s)", col(2))]
    for name, f in rows:
        print(name.ljust(20) + "".join(str(f(summary[a])).rjust(w + 2) for a in agents))
    for a in agents:
        odd = summary[a][3]
        if not odd:
            continue
        print("\n%s: %d case(s) not OK (behavior/behaviorClose):" % (a, len(odd)))
        for (cat, beh, close), ids in sorted(by_category(odd).items(),
                                             key=lambda kv: [int(x) for x in kv[0][0].split(".")]):
            shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
            print("  %-6s %-14s close %-14s %3d: %s" % (cat, beh, close, len(ids), shown))


def run_one(args, agent, out, wstest, spec_base):
    """Serves the echo app with AGENT, runs wstest over it into OUT/reports/AGENT.

    Returns (wall seconds, wstest CPU seconds, server CPU seconds), or None on a failed run."""
    port = free_port()
    cmd = [args.python] + [x.format(port=port) for x in SERVERS[agent]]
    with open(os.path.join(out, agent + ".log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_port(port, proc):
            print("autobahn: %s did not start (see %s.log)" % (agent, agent), file=sys.stderr)
            return None
        spec = dict(spec_base, outdir=os.path.join(out, "reports", agent),
                    servers=[{"agent": agent, "url": "ws://127.0.0.1:%d" % port}])
        spec_path = os.path.join(out, "spec-%s.json" % agent)
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=2)
        index_path = os.path.join(spec["outdir"], "index.json")
        if os.path.exists(index_path):
            os.unlink(index_path)
        print("autobahn: %s ..." % agent, flush=True)
        t0 = time.monotonic()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.path.join(out, "wstest-%s.log" % agent), "wb") as log:
            rc = subprocess.call([wstest, "-m", "fuzzingclient", "-s", spec_path],
                                 cwd=out, stdout=log, stderr=subprocess.STDOUT)
        elapsed = time.monotonic() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = cpu_seconds(proc.pid)
        if rc != 0:
            print("autobahn: wstest exited %d (see %s/wstest-%s.log)" % (rc, args.out, agent),
                  file=sys.stderr)
            return None
        if proc.poll() is not None:
            print("autobahn: %s exited during the run (code %s, see %s.log)"
                  % (agent, proc.returncode, agent), file=sys.stderr)
        return elapsed, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), server_cpu
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wstest", default=os.environ.get("WSTEST", ".venv-autobahn/bin/wstest"))
    p.add_argument("--python", default=sys.executable, help="python that runs the servers")
    p.add_argument("--cases", default="*", help="comma-separated case patterns (default: all)")
    p.add_argument("--exclude", default="", help="comma-separated case patterns to leave out")
    p.add_argument("--fast", action="store_true", help="also leave out " + ",".join(FAST_EXCLUDE))
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: "
                   + ", ".join(SERVERS))
    p.add_argument("--out", default="build/autobahn", help="reports and logs go here")
    p.add_argument("--report-only", action="store_true",
                   help="only summarize the reports already in OUT/reports/SERVER/")
    args = p.parse_args(argv)

    agents = split(args.servers)
    for a in agents:
        if a not in SERVERS:
            p.error("unknown server %r" % a)
    out = os.path.abspath(args.out)
    wstest = os.path.abspath(args.wstest)  # wstest runs in OUT
    times = {}
    status = 0
    if not args.report_only:
        if not os.path.exists(wstest):
            print("autobahn: no wstest at %s (make autobahn installs it)" % args.wstest,
                  file=sys.stderr)
            return 2
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(HERE, "fuzzingclient.json")) as f:
            spec = json.load(f)
        spec["cases"] = split(args.cases)
        spec["exclude-cases"] = split(args.exclude) + (FAST_EXCLUDE if args.fast else [])
        print("autobahn: wstest -m fuzzingclient, cases %s, excluding %s, one server at a time"
              % (spec["cases"], spec["exclude-cases"] or "none"), flush=True)
        # One wstest run per server: wstest writes its report only at the end of a run, so a
        # run cut short keeps the servers already done, and each gets its own times.
        for a in agents:
            t = run_one(args, a, out, wstest, spec)
            if t is None:
                status = 2
            else:
                times[a] = t
    index = {}
    for a in agents:
        path = os.path.join(out, "reports", a, "index.json")
        if os.path.exists(path):
            with open(path) as f:
                index.update(json.load(f))
    summary = summarize(index, [a for a in agents if a in index])
    print_table(summary, times)
    print("\nreports: %s" % ", ".join(os.path.join(args.out, "reports", a, "index.html")
                                      for a in summary))
    if "cicada" not in summary:
        if "cicada" in agents:
            print("autobahn: no cicada case in the report", file=sys.stderr)
            return 2
        return status
    _, beh, close, _, _, _ = summary["cicada"]
    bad_close = sum(close.get(b, 0) for b in CLOSE_FAILURES)
    if beh.get("FAILED", 0) or bad_close:
        print("autobahn: cicada FAILED %d case(s); %d close behaviour(s) failed (%s)"
              % (beh.get("FAILED", 0), bad_close, ", ".join(CLOSE_FAILURES)), file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
