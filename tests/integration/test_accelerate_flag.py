"""`cicada APP --accelerate`: the app's @app.middleware("http") layers run on cicada's middleware
without a code change; apps it can't accelerate are served unchanged, with a warning."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi")


def seen(port, path="/"):
    r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    assert r.status_code == 200 and r.json() == {"hello": "world"}
    return r.headers["x-seen"]


def test_without_the_flag_starlette_runs_the_layers(serve):
    p = serve("mwapps:app", "--port", "0")
    port = p.wait_port()
    assert seen(port) == "unset" and seen(port, "/sub/") == "unset"
    assert "--accelerate" not in p.output


@pytest.mark.parametrize("how", [["--accelerate"], "env"])
def test_flag_swaps_layers_of_the_app_and_its_mounts(serve, how):
    if how == "env":
        p = serve("mwapps:app", "--port", "0", env={"CICADA_ACCELERATE": "1"})
    else:
        p = serve("mwapps:app", "--port", "0", *how)
    port = p.wait_port()
    assert seen(port) == "endpoint" and seen(port, "/sub/") == "endpoint"
    assert "--accelerate: 2 middleware layer(s) run on cicada's middleware" in p.output


@pytest.mark.parametrize("app, reason", [
    ("mwapps:wrapped", "accelerate() needs a Starlette or FastAPI app, got Wrapped"),
    ("mwapps:started", "accelerate() must be called before the app starts"),
])
def test_apps_it_cannot_accelerate_are_served_with_a_warning(serve, app, reason):
    p = serve(app, "--port", "0", "--accelerate")
    port = p.wait_port()
    assert seen(port) == "unset"
    assert "--accelerate: " + reason in p.output and "middleware runs unchanged" in p.output


def test_gunicorn_worker_with_accelerate(serve):
    p = serve("-b", "127.0.0.1:0", "-w", "1", "-k", "gunicorn_workers.AcceleratedWorker",
              "mwapps:app", module="gunicorn")
    port = int(p.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", timeout=30).group(1))
    p.wait_for("Application startup complete.", timeout=30)
    assert seen(port) == "endpoint" and seen(port, "/sub/") == "endpoint"
