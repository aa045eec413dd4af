"""gunicorn worker classes for the tests: CicadaWorker itself when the C HttpServer is in the
build, else CicadaWorker on the test stand-in (see uvicorn_backend.py)."""

from cicada.workers import CicadaWorker
from cicada_proc import http_args

_http = http_args()[1] if http_args() else "auto"


class TestWorker(CicadaWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": _http}


class AcceleratedWorker(CicadaWorker):
    """What docs/usage.md tells gunicorn users to write for --accelerate."""

    CONFIG_KWARGS = {**TestWorker.CONFIG_KWARGS, "accelerate": True}
