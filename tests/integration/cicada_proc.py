"""Run ``python -m cicada ...`` in a subprocess for tests: output captured line by line,
waiting for log lines, the bound port, and stopping with a signal."""

from __future__ import annotations

import os
import re
import signal as _signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def have_c_server() -> bool:
    import cicada._core as core

    return hasattr(core, "HttpServer")


def http_args() -> list[str]:
    """Use the C HttpServer when this build has it, else the test stand-in."""
    return [] if have_c_server() else ["--http", "uvicorn_backend:HttpServer"]


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICADA_")}
    env.pop("WEB_CONCURRENCY", None)
    env.pop("FORWARDED_ALLOW_IPS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO / "examples")])
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


class CicadaProcess:
    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                 module: str = "cicada", add_http: bool = True) -> None:
        cmd = [sys.executable, "-m", module, *args]
        if add_http and module == "cicada":
            cmd += http_args()
        self.cmd = cmd
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=base_env(env), cwd=cwd,
            text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{pattern!r} not seen (rc={self.proc.poll()}); output:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.2))

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    def wait_port(self, timeout: float = 20.0) -> int:
        m = self.wait_for(r"running on https?://[^ ]*:(\d+) \(Press CTRL\+C", timeout)
        return int(m.group(1))

    def signal(self, sig: int = _signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.wait(5)
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def started_processes(*prefix: str):
    """Body of a `serve` fixture: yields start(args..., **kw) -> a started CicadaProcess (with
    `prefix` before the args); every process is killed at teardown."""
    started: list[CicadaProcess] = []

    def start(*args: str, **kw) -> CicadaProcess:
        p = CicadaProcess([*prefix, *args], **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 30.0,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cicada", *args], capture_output=True, text=True, env=base_env(env),
        timeout=timeout, cwd=cwd,
    )


def tcp_sockets(port: int, states: tuple[str, ...] | None = None) -> int:
    """Count TCP sockets (IPv4 + IPv6, from /proc/net/tcp*) with ``port`` at either end, not in
    LISTEN. ``states`` filters on the kernel's hex state codes ("01" = ESTABLISHED,
    "06" = TIME_WAIT)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    local, remote, state = fields[1], fields[2], fields[3]
                    if state == "0A":
                        continue
                    if states is not None and state not in states:
                        continue
                    if int(local.rsplit(":", 1)[1], 16) == port or int(remote.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            continue
    return count
