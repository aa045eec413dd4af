"""The interleaved middleware measurement (bench/suites/middleware.py) recovers what each block
of requests cost from arrival records, whatever order the connections' requests arrive in."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

middleware_suite = pytest.importorskip("suites.middleware")


def _arrivals(costs_ns: list[float], jitter: int, seed: int = 1):
    """Arrival records of len(costs_ns) blocks of BLOCK requests, block k costing costs_ns[k]
    per request; each request arrives up to `jitter` places out of its order (as with 64
    connections), and the records come in arrival order."""
    block = middleware_suite.BLOCK
    rng = random.Random(seed)
    times, t = [], 0.0
    for cost in costs_ns:
        for _ in range(block):
            t += cost
            times.append(t)
    order = sorted(range(len(times)), key=lambda n: n + rng.uniform(-jitter, jitter))
    arrival_times = sorted(times)  # the server sees one arrival per request cost, in any order
    return order, [round(x) for x in arrival_times]


def test_block_costs_are_recovered_despite_arrival_order():
    costs = [70_000.0, 76_000.0] * 5
    numbers, times = _arrivals(costs, jitter=64)
    got = middleware_suite._block_costs(numbers, times)
    assert sorted(got) == list(range(len(costs)))
    for block, cost in got.items():
        assert cost == pytest.approx(costs[block], rel=0.01)


def test_blocks_cut_by_the_run_are_left_out():
    numbers, times = _arrivals([70_000.0] * 4, jitter=0)
    block = middleware_suite.BLOCK
    keep = [(n, t) for n, t in zip(numbers, times) if block // 2 <= n < 3 * block + block // 2]
    got = middleware_suite._block_costs([n for n, _ in keep], [t for _, t in keep])
    assert sorted(got) == [1, 2]
