"""A Litestar app for the integration tests (``litestarapp:app``): the example's handlers, with
an on_shutdown hook that writes $LITESTAR_SHUTDOWN_FILE, so a test sees lifespan shutdown run."""

from __future__ import annotations

import os
from pathlib import Path

from litestar import Litestar
from litestar_app import HANDLERS, fill_state


def _shutdown(app: Litestar) -> None:
    Path(os.environ["LITESTAR_SHUTDOWN_FILE"]).write_text("shutdown ran")


app = Litestar(route_handlers=HANDLERS, on_startup=[fill_state], on_shutdown=[_shutdown])
