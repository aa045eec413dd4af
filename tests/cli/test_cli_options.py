"""Option parsing, environment variables, defaults in --help, validation errors, import errors."""

from __future__ import annotations

import platform

import pytest

from cicada import cli
from cicada.config import Config, ConfigError
from cicada.forwarded import TrustedHosts
from cicada.importer import ImportFromStringError, detect_interface, import_from_string
from cicada_proc import run_cli


def parse(argv, monkeypatch=None, env=None):
    if monkeypatch is not None:
        for k in list(__import__("os").environ):
            if k.startswith("CICADA_"):
                monkeypatch.delenv(k)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
    app, kwargs = cli.parse_config_kwargs(argv)
    return app, kwargs


def test_defaults_match_uvicorn(monkeypatch):
    app, kw = parse(["main:app"], monkeypatch)
    assert app == "main:app"
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000 and kw["backlog"] == 2048
    assert kw["proxy_headers"] is True and kw["server_header"] is True and kw["date_header"] is True
    assert kw["timeout_keep_alive"] == 5 and kw["timeout_graceful_shutdown"] is None
    assert kw["lifespan"] == "auto" and kw["loop"] == "auto" and kw["http"] == "auto"
    assert kw["workers"] is None and kw["access_log"] is True and kw["use_colors"] is None
    assert kw["headers"] is None and kw["root_path"] == ""


def test_flags_parse(monkeypatch):
    _, kw = parse([
        "m:a", "--host", "::1", "--port", "0", "--workers", "3", "--no-proxy-headers",
        "--no-server-header", "--no-date-header", "--header", "X-A: 1", "--header", "x-b:2",
        "--root-path", "/api", "--limit-concurrency", "10", "--limit-max-requests", "5",
        "--timeout-keep-alive", "2.5", "--timeout-graceful-shutdown", "7", "--log-level", "debug",
        "--no-access-log", "--lifespan", "on", "--loop", "asyncio", "--forwarded-allow-ips", "*",
        "--factory", "--ws", "none",
    ], monkeypatch)
    assert kw["host"] == "::1" and kw["port"] == 0 and kw["workers"] == 3
    assert kw["proxy_headers"] is False and kw["server_header"] is False and kw["date_header"] is False
    assert kw["headers"] == ["X-A: 1", "x-b:2"]
    assert kw["timeout_keep_alive"] == 2.5 and kw["timeout_graceful_shutdown"] == 7
    assert kw["factory"] is True and kw["ws"] == "none" and kw["forwarded_allow_ips"] == "*"


def test_env_vars_for_options(monkeypatch):
    _, kw = parse(["m:a"], monkeypatch, {
        "CICADA_PORT": "9001", "CICADA_HOST": "0.0.0.0", "CICADA_WORKERS": "4",
        "CICADA_PROXY_HEADERS": "false", "CICADA_RELOAD_DIR": "a b", "CICADA_HEADER": "X-A:1\nX-B:2",
        "CICADA_TIMEOUT_GRACEFUL_SHUTDOWN": "3.5", "CICADA_LOG_LEVEL": "warning",
    })
    assert kw["port"] == 9001 and kw["host"] == "0.0.0.0" and kw["workers"] == 4
    assert kw["proxy_headers"] is False and kw["reload_dirs"] == ["a", "b"]
    assert kw["headers"] == ["X-A:1", "X-B:2"] and kw["timeout_graceful_shutdown"] == 3.5
    # the command line wins over the environment
    _, kw = parse(["m:a", "--port", "9002"], monkeypatch, {"CICADA_PORT": "9001"})
    assert kw["port"] == 9002


def test_env_app(monkeypatch):
    app, _ = parse([], monkeypatch, {"CICADA_APP": "pkg.mod:app"})
    assert app == "pkg.mod:app"


def test_bad_env_value_names_variable(monkeypatch):
    with pytest.raises(cli.UsageError, match=r"--port.*CICADA_PORT.*'x' is not a valid integer"):
        parse(["m:a"], monkeypatch, {"CICADA_PORT": "x"})


def test_env_file_sets_options(monkeypatch, tmp_path):
    env = tmp_path / ".env"
    env.write_text("# comment\nCICADA_PORT=9123\nexport MY_SETTING='hello world'\n")
    monkeypatch.delenv("MY_SETTING", raising=False)
    monkeypatch.delenv("CICADA_PORT", raising=False)
    _, kw = parse(["m:a", "--env-file", str(env)], monkeypatch)
    assert kw["port"] == 9123
    assert __import__("os").environ["MY_SETTING"] == "hello world"


def test_env_file_fallback_parser(tmp_path):
    from cicada.config import _env_file_values

    f = tmp_path / "x.env"
    f.write_text('A=1\nB="two words"\nexport C=3 # trailing\nD=\'q\'\nbad line\n')
    assert _env_file_values(str(f)) == {"A": "1", "B": "two words", "C": "3", "D": "q"}


def test_help_lists_every_option_with_default():
    r = run_cli(["--help"])
    assert r.returncode == 0
    out = " ".join(r.stdout.split())  # undo the help formatter's line wrapping
    for opt in cli.OPTIONS:
        for flag in opt.flags:
            assert flag in out, flag
    assert out.count("[default:") >= len(cli.OPTIONS)
    assert "[default: 8000; env: CICADA_PORT]" in out
    assert "[default: 127.0.0.1; env: CICADA_HOST]" in out
    assert "[default: 2048; env: CICADA_BACKLOG]" in out
    assert "$WEB_CONCURRENCY or 1" in out


def test_help_shows_env_default():
    r = run_cli(["--help"], env={"CICADA_PORT": "7777"})
    assert "env: CICADA_PORT = '7777'" in " ".join(r.stdout.split())


def test_version():
    r = run_cli(["--version"])
    assert r.returncode == 0
    assert r.stdout.strip() == (
        f"cicada {__import__('cicada').__version__} with CPython {platform.python_version()} on Linux"
    )


@pytest.mark.parametrize("args, needle", [
    (["--port", "abc", "m:a"], "Invalid value for --port: invalid int value: 'abc'"),
    (["--port", "70000", "m:a"], "Invalid value for '--port': 70000 is larger than the maximum 65535"),
    (["--workers", "0", "m:a"], "Invalid value for '--workers': 0 is smaller than the minimum 1"),
    (["--lifespan", "sometimes", "m:a"], "--lifespan"),
    (["--log-level", "loud", "m:a"], "--log-level"),
    (["--loop", "tokio", "m:a"], "--loop"),
    (["--root-path", "api", "m:a"], "Invalid value for '--root-path'"),
    (["--header", "novalue", "m:a"], "Invalid value for '--header'"),
    (["--limit-concurrency", "0", "m:a"], "'--limit-concurrency'"),
    (["--timeout-keep-alive", "-1", "m:a"], "'--timeout-keep-alive'"),
    (["--uds", "/tmp/x.sock", "--fd", "3", "m:a"], "cannot be used together"),
    (["--ssl-certfile", "c.pem", "m:a"], "Invalid value for '--ssl-certfile': 'c.pem': no such file"),
    (["--http2", "m:a"], "HTTP/2 is not supported"),
    (["--log-config", "/nonexistent/log.json", "m:a"], "'--log-config'"),
    (["--env-file", "/nonexistent/.env", "m:a"], "'--env-file'"),
    ([], "Missing argument 'APP'"),
    (["--no-such-flag", "m:a"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_options_exit_2_with_message(args, needle):
    r = run_cli(args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr, r.stderr


def test_bad_env_var_exits_2():
    r = run_cli(["m:a"], env={"CICADA_WORKERS": "many"})
    assert r.returncode == 2 and "CICADA_WORKERS" in r.stderr


@pytest.mark.parametrize("app, message", [
    ("nonexistent_mod:app", 'Error loading ASGI app. Could not import module "nonexistent_mod".'),
    ("testapps:nope", 'Error loading ASGI app. Attribute "nope" not found in module "testapps".'),
    ("testapps", 'Import string "testapps" must be in format "<module>:<attribute>".'),
])
def test_import_errors(app, message):
    r = run_cli([app, "--port", "0"])
    assert r.returncode == 3  # uvicorn 0.54 exits with its STARTUP_FAILURE status (3)
    assert message in r.stderr


def test_missing_dependency_inside_app_shows_traceback(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import not_installed_dep_xyz\napp = None\n")
    r = run_cli(["brokenapp:app", "--app-dir", str(tmp_path)])
    assert r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and "not_installed_dep_xyz" in r.stderr


def test_wsgi_app_clear_error():
    r = run_cli(["testapps:wsgi_app", "--port", "0"])
    assert r.returncode == 3
    assert "looks like a WSGI app" in r.stderr and "a2wsgi" in r.stderr


def test_loop_cicada_unavailable_message():
    import importlib.util

    if importlib.util.find_spec("cicada.loop") is not None:
        pytest.skip("cicada.loop exists in this build")
    r = run_cli(["testapps:app", "--port", "0", "--loop", "cicada"])
    assert r.returncode == 3
    assert "cicada's own loop is not available in this build" in r.stderr


# -- in-process unit tests -----------------------------------------------------------------
def test_config_validation_names_option():
    with pytest.raises(ConfigError) as e:
        Config("m:a", port=-1, log_config=None)
    assert e.value.option == "port"
    with pytest.raises(ConfigError, match="backlog"):
        Config("m:a", backlog=0, log_config=None)
    with pytest.raises(ConfigError, match="limit_max_requests"):
        Config("m:a", limit_max_requests="x", log_config=None)


def test_web_concurrency_default(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert Config("m:a", log_config=None).workers == 3
    assert Config("m:a", workers=2, log_config=None).workers == 2
    monkeypatch.delenv("WEB_CONCURRENCY")
    assert Config("m:a", log_config=None).workers == 1


def test_forwarded_allow_ips_env(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    assert Config("m:a", log_config=None).forwarded_allow_ips == "10.0.0.0/8"
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    assert Config("m:a", log_config=None).forwarded_allow_ips == "127.0.0.1,::1"


def test_trusted_hosts():
    t = TrustedHosts("127.0.0.1, 10.0.0.0/8, ::1, /run/app.sock, fd00::/8")
    assert t("127.0.0.1") and t("10.1.2.3") and t("::1") and t("fd00::5") and t("/run/app.sock")
    assert not t("192.168.1.1") and not t(None) and not t("") and not t("unix:other")
    assert TrustedHosts("*")("203.0.113.9")
    assert TrustedHosts(["127.0.0.1"])("127.0.0.1")


def test_import_from_string_nested():
    import testapps

    assert import_from_string("testapps:Nested.Inner.app") is testapps.app
    with pytest.raises(ImportFromStringError, match="must be in format"):
        import_from_string(":app")


def test_interface_detection():
    import testapps

    assert detect_interface(testapps.app) == "asgi3"
    assert detect_interface(testapps.asgi2_app) == "asgi2"
    assert detect_interface(testapps.wsgi_app) == "wsgi"

    class Asgi3:
        async def __call__(self, scope, receive, send):
            pass

    assert detect_interface(Asgi3()) == "asgi3"


def test_config_headers_and_server_header():
    c = Config("testapps:app", headers=[("X-A", "1"), "Server: mine"], log_config=None)
    c.load()
    assert c.encoded_headers == [(b"x-a", b"1"), (b"server", b"mine")]
    assert c.server_header_value is None  # the user's Server header replaces ours
    c = Config("testapps:app", log_config=None)
    c.load()
    assert c.server_header_value == b"cicada"
    c = Config("testapps:app", server_header=False, log_config=None)
    c.load()
    assert c.server_header_value is None


def test_factory_and_asgi2_wrapping():
    import testapps

    c = Config("testapps:create_app", factory=True, log_config=None)
    c.load()
    assert c.loaded_app is testapps.app
    c = Config("testapps:asgi2_app", log_config=None)
    c.load()
    assert c.interface == "asgi2" and c.loaded_app.app is testapps.asgi2_app


def test_config_is_picklable_for_workers():
    import pickle

    c = Config("testapps:app", log_config=None)
    c.load()
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.loaded is False and c2.app == "testapps:app"


def test_accelerate_flag_and_env(monkeypatch):
    assert parse(["m:a"], monkeypatch)[1]["accelerate"] is False
    assert parse(["m:a", "--accelerate"], monkeypatch)[1]["accelerate"] is True
    assert parse(["m:a"], monkeypatch, {"CICADA_ACCELERATE": "yes"})[1]["accelerate"] is True
    assert parse(["m:a", "--no-accelerate"], monkeypatch, {"CICADA_ACCELERATE": "1"})[1]["accelerate"] is False
