"""Resident memory of a process, for the tests that check RSS stays flat (Linux /proc)."""

from __future__ import annotations


def rss_kb(pid: int | str = "self") -> int:
    """VmRSS of `pid` (this process by default) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")
