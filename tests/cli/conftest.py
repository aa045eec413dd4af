import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from cicada_proc import CicadaProcess  # noqa: E402


@pytest.fixture
def serve():
    """serve(args...) -> a started CicadaProcess; everything is killed at teardown."""
    started: list[CicadaProcess] = []

    def start(*args: str, **kw):
        p = CicadaProcess(list(args), **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
