"""Hypothesis set-up shared by the differential tests: CI runs a small derandomised sample; a long
hunt sets PREFIX_EXAMPLES=N, and PREFIX_SEED=S draws other examples, seeded so that a failure
replays."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def hunt_settings(prefix: str, default: int) -> tuple[int, settings, str | None]:
    """(number of examples, the hypothesis settings, the seed or None) for PREFIX_* variables."""
    examples = int(os.environ.get(f"{prefix}_EXAMPLES", str(default)))
    seed = os.environ.get(f"{prefix}_SEED")
    return examples, settings(
        max_examples=examples,
        deadline=None,
        derandomize=seed is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ), seed
