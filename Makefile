# cicada's developer entry points. `make test` is the one command CI and the README use: it makes
# its own virtual environment, installs the test dependencies, builds, and runs every suite.

PYTHON    ?= python3
VENV      ?= .venv
ASAN_VENV ?= .venv-asan
PY        := $(VENV)/bin/python
APY       := $(ASAN_VENV)/bin/python
CC        ?= gcc
FUZZ_TIME ?= 300
PYTEST_ARGS ?=
# Every venv gets these before `--no-build-isolation` installs: the build backend for cicada, and
# setuptools with wheel for dependencies published only as sdists (blockbuster's forbiddenfruit).
BUILD_PKGS := meson-python meson ninja setuptools wheel

CORE      := src/cicada/_core
# Pure C (no Python.h): the HTTP parser and the WebSocket framing. C tests and fuzzers link these.
PURE_SRC  := $(wildcard $(CORE)/http/*.c) $(wildcard $(CORE)/ws/frame*.c $(CORE)/ws/utf8*.c $(CORE)/ws/deflate*.c)
PURE_HDR  := $(wildcard $(CORE)/http/*.h $(CORE)/ws/*.h)
CFLAGS_TEST := -std=gnu11 -Wall -Wextra -Werror -g -O1 -I$(CORE) \
               -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
C_TESTS   := $(patsubst tests/c/%.c,build/ctest/%,$(wildcard tests/c/test_*.c))
FUZZERS   := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz_*.c))

ASAN_LIB  = $(shell $(CC) -print-file-name=libasan.so)
ASAN_ENV  = LD_PRELOAD=$(ASAN_LIB) PYTHONMALLOC=malloc \
            ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0 \
            LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
            UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

.PHONY: all sysdeps venv build test ctest pytest asan fuzz fuzz-build bench compat compat-ci peer autobahn clean

all: build

sysdeps:
	@sh scripts/sysdeps.sh

# --- virtual environments -------------------------------------------------------------------
$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(BUILD_PKGS)
	$(PY) -m pip install -q --no-build-isolation -Cbuild-dir=build/$(notdir $(VENV)) '.[test,bench]'
	touch $@

$(ASAN_VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(ASAN_VENV)
	$(APY) -m pip install -q --upgrade pip
	$(APY) -m pip install -q $(BUILD_PKGS)
	$(APY) -m pip install -q --no-build-isolation -Cbuild-dir=build/$(notdir $(ASAN_VENV))-deps '.[test]'
	touch $@

venv: $(VENV)/.deps

# --- builds -----------------------------------------------------------------------------------
# A profile-guided build (PGO=0 for a plain one): an instrumented build, a training run of the
# middleware and server tests (the profile, not their results, matters here: the suite runs
# after), then the build that uses the profile. It takes ~4% off a FastAPI request's CPU under
# the server, and a third off a middleware layer's (docs/middleware.md). `pip install .` builds
# plain.
PGO       ?= 1
PGO_TRAIN ?= tests/middleware tests/server
BUILD_DIR := build/$(notdir $(VENV))
PIP_BUILD := $(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall -Cbuild-dir=$(BUILD_DIR)

build: venv
ifeq ($(PGO),1)
	$(PIP_BUILD) -Csetup-args=-Db_pgo=generate .
	find $(BUILD_DIR) -name '*.gcda' -delete
	-timeout 900 $(PY) -m pytest -q -p no:cacheprovider $(PGO_TRAIN) > $(BUILD_DIR)/pgo-training.log 2>&1
	$(PIP_BUILD) -Csetup-args=-Db_pgo=use -Csetup-args=-Dc_args=-Wno-missing-profile .
else
	$(PIP_BUILD) -Csetup-args=-Db_pgo=off -Csetup-args=-Dc_args= .
endif

asan-build: $(ASAN_VENV)/.deps
	$(APY) -m pip install -q --no-build-isolation --no-deps --force-reinstall -Cbuild-dir=build/$(notdir $(ASAN_VENV)) \
	  -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
	  -Csetup-args=-Dbuildtype=debugoptimized \
	  "-Csetup-args=-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer" .

# Some C tests include a layer file directly (loop/epoll.c, core/buffer.c): depend on them all.
build/ctest/%: tests/c/%.c $(wildcard $(CORE)/*/*.c $(CORE)/*/*.h) $(wildcard tests/c/*.h)
	@mkdir -p build/ctest
	$(CC) $(CFLAGS_TEST) $< $(PURE_SRC) -lz -o $@

# --- tests ------------------------------------------------------------------------------------
ctest: $(C_TESTS)
	@set -e; for t in $(C_TESTS); do echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 $$t; done

pytest: build
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: sysdeps ctest pytest

# The whole suite against an AddressSanitizer + UBSan build, with LeakSanitizer on: CPython runs on
# malloc (PYTHONMALLOC=malloc) so every object allocation is visible to it. Leaked GC-tracked
# objects stay reachable through the GC lists, so the RSS tests cover those.
asan: sysdeps ctest asan-build
	$(ASAN_ENV) $(APY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# --- fuzzing (libFuzzer through clang) ------------------------------------------------------------
build/fuzz/%: fuzz/%.c $(PURE_SRC) $(PURE_HDR)
	@mkdir -p build/fuzz
	clang -g -O1 -I$(CORE) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $< $(PURE_SRC) -lz -o $@

fuzz-build: $(FUZZERS)

fuzz: sysdeps fuzz-build
	@set -e; for f in $(FUZZERS); do \
	  name=$$(basename $$f); mkdir -p build/fuzz/corpus-$$name; \
	  echo "== $$name for $(FUZZ_TIME)s"; \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 build/fuzz/corpus-$$name fuzz/corpus/$$name; \
	done

# --- other CPython versions -------------------------------------------------------------------
# Builds (-Werror) on every other CPython 3.12+ found on PATH or in pyenv, smoke-tests the
# extension with no third-party package, then runs the whole pytest suite (CPython's own asyncio
# conformance tests come from that interpreter's stdlib), so changes there show up before a user
# meets them. COMPAT_PYTEST_ARGS narrows it; COMPAT_PYTEST_ARGS=none runs the smoke test only.
COMPAT_PYTHONS ?= $(shell sh scripts/find-pythons.sh)
COMPAT_PYTEST_ARGS ?= -q -p no:cacheprovider
# CI's compat run (.ci/run, to stay well under an hour) leaves out the long tests that do not
# depend on the CPython version: the differential hunts (the same examples through the same C
# protocol code) and the multi-process integration tests. make test and make asan run them.
COMPAT_CI_SKIP := tests/middleware/test_differential.py tests/test_http_h11_diff.py \
                  tests/websocket/test_ws_differential.py tests/integration/test_workers.py \
                  tests/integration/test_gunicorn_reload.py tests/integration/test_nginx.py \
                  tests/integration/test_big_download.py tests/server/test_app_messages_diff.py \
                  tests/server/test_request_side_diff.py tests/websocket/test_ws_app_messages_diff.py
COMPAT_CI_ARGS := -q -p no:cacheprovider $(addprefix --ignore=,$(COMPAT_CI_SKIP))

compat: sysdeps
	@set -e; for py in $(COMPAT_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); env=build/compat-$$v/venv; \
	  echo "== CPython $$v"; [ -x $$env/bin/python ] || $$py -m venv $$env; \
	  $$env/bin/python -m pip install -q $(BUILD_PKGS); \
	  $$env/bin/python -m pip install -q --no-build-isolation --force-reinstall --no-deps \
	    -Cbuild-dir=build/compat-$$v/build . ; \
	  (cd build && ../$$env/bin/python ../tests/compat_smoke.py); \
	  if [ "$(COMPAT_PYTEST_ARGS)" != none ]; then \
	    $$env/bin/python -m pip install -q --no-build-isolation -Cbuild-dir=build/compat-$$v/build '.[test]'; \
	    $$env/bin/python -m pytest $(COMPAT_PYTEST_ARGS); \
	  fi; \
	done

compat-ci:
	$(MAKE) compat COMPAT_PYTEST_ARGS='$(COMPAT_CI_ARGS)'

# --- the peers' own middleware tests ------------------------------------------------------------
# Starlette's and FastAPI's tests that use BaseHTTPMiddleware, run against cicada's middleware
# (scripts/peer_tests.sh, docs/middleware.md), on pinned versions: a failure not listed in
# tests/peer/expected_failures.txt fails the target. Their trees are the releases' sdists.
PEER_VENV      ?= .venv-peer
PEER_STARLETTE := 1.10.0
PEER_FASTAPI   := 0.165.0
PEER_PINS      := starlette==$(PEER_STARLETTE) fastapi==$(PEER_FASTAPI) anyio==4.16.0 trio==0.35.0 \
                  httpx2==2.16.2 jinja2==3.1.6 itsdangerous==2.2.0 python-multipart==0.0.34 \
                  inline-snapshot==0.36.1 opentelemetry-sdk==1.45.2 dirty-equals==0.11 \
                  blockbuster==1.5.29
PEER_SRC       := build/peer-src
# the loops anyio's asyncio backend runs the peers' tests on (CI leaves uvloop out, for time)
PEER_LOOPS     ?= asyncio uvloop cicada

$(PEER_VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEER_VENV)/bin/python -m pip install -q $(BUILD_PKGS)
	$(PEER_VENV)/bin/python -m pip install -q --no-build-isolation -Cbuild-dir=build/peer-venv '.[test]' $(PEER_PINS)
	touch $@

$(PEER_SRC)/.unpacked: | $(PEER_VENV)/.deps
	mkdir -p $(PEER_SRC)
	$(PEER_VENV)/bin/python -m pip download -q --no-deps --no-binary :all: -d $(PEER_SRC) \
	  starlette==$(PEER_STARLETTE) fastapi==$(PEER_FASTAPI)
	cd $(PEER_SRC) && for f in *.tar.gz; do tar xzf $$f; done
	touch $@

peer: $(PEER_VENV)/.deps $(PEER_SRC)/.unpacked
	$(PEER_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall -Cbuild-dir=build/peer-venv .
	PY=$(PEER_VENV)/bin/python PEER_EXPECT=tests/peer/expected_failures.txt PEER_LOOPS="$(PEER_LOOPS)" \
	  scripts/peer_tests.sh $(PEER_SRC)/starlette-$(PEER_STARLETTE) $(PEER_SRC)/fastapi-$(PEER_FASTAPI)

# --- the Autobahn WebSocket testsuite -------------------------------------------------------------
# wstest's fuzzing client (Python 2.7 only: .venv-autobahn, made by setup_wstest.sh from pyenv's
# or PATH's python2.7; it stops, saying so, when there is none) against cicada, uvicorn --ws
# websockets and uvicorn --ws wsproto serving one echo app, one after another
# (tests/websocket/autobahn, docs/websocket-server.md). Fails when cicada fails a case. Not in
# `make test` or CI: ~17-20 minutes a server, most of it wstest compressing (12.*, 13.*).
# AUTOBAHN_CASES / AUTOBAHN_EXCLUDE: comma-separated case patterns ('1.*,2.*', '9.7.*');
# AUTOBAHN_FAST=1 leaves out the slow categories 9 (limits), 12 and 13 (permessage-deflate).
AUTOBAHN_VENV    ?= .venv-autobahn
AUTOBAHN_CASES   ?= *
AUTOBAHN_EXCLUDE ?=
AUTOBAHN_FAST    ?= 0
AUTOBAHN_SERVERS ?= cicada,uvicorn-websockets,uvicorn-wsproto
AUTOBAHN_OUT     ?= build/autobahn

$(AUTOBAHN_VENV)/.deps: tests/websocket/autobahn/requirements-py2.txt
	sh tests/websocket/autobahn/setup_wstest.sh $(AUTOBAHN_VENV)

autobahn: build $(AUTOBAHN_VENV)/.deps
	@$(PY) -c 'import uvicorn, websockets, wsproto' 2>/dev/null || $(PY) -m pip install -q uvicorn websockets wsproto
	$(PY) tests/websocket/autobahn/run.py --wstest $(AUTOBAHN_VENV)/bin/wstest --out $(AUTOBAHN_OUT) \
	  --cases '$(AUTOBAHN_CASES)' --exclude '$(AUTOBAHN_EXCLUDE)' --servers '$(AUTOBAHN_SERVERS)' \
	  $(if $(filter 1,$(AUTOBAHN_FAST)),--fast)

# --- benchmarks ---------------------------------------------------------------------------------
bench: sysdeps build
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) $(ASAN_VENV) $(PEER_VENV) $(AUTOBAHN_VENV) .pytest_cache
