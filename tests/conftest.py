"""Makes tests/support importable from every suite as `support`, and makes hypothesis
deterministic under CI (CI=true): the same examples every run, no example database, so a red CI
is reproducible. Locally it keeps exploring new examples."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is in the test extras
    settings = None

if settings is not None:
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
