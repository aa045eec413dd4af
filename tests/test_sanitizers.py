"""Proves that `make asan` really runs with AddressSanitizer and LeakSanitizer armed: a process
that leaks or overflows a heap buffer must fail. Skipped outside the sanitizer run."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    "libasan" not in os.environ.get("LD_PRELOAD", ""), reason="only under make asan"
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_leak_fails_the_process():
    proc = run("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p\n"
               "for _ in range(4): libc.malloc(4096)")
    assert proc.returncode != 0
    assert "LeakSanitizer" in proc.stderr


def test_heap_overflow_fails_the_process():
    proc = run("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p\n"
               "p = libc.malloc(16); ctypes.memset(p, 0, 64)")
    assert proc.returncode != 0
    assert "heap-buffer-overflow" in proc.stderr
