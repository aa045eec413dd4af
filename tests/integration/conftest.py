import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cicada_proc import started_processes  # noqa: E402


@pytest.fixture
def serve():
    """serve(args...) -> a started CicadaProcess; everything is killed at teardown."""
    yield from started_processes()
