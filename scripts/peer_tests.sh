#!/usr/bin/env bash
# Runs Starlette's and FastAPI's own middleware tests against cicada's HTTPMiddleware, in three
# modes (plain = reference, subclass, accelerate; see tests/peer/cicada_peer.py). Not part of
# `make test`: the peers' trees come from outside (their sdists or git checkouts).
#
#   scripts/peer_tests.sh STARLETTE_TREE FASTAPI_TREE [MODE...]
#
# The trees should match the installed starlette / fastapi versions. PY (default
# .venv/bin/python) must have cicada built and the peers' test deps installed (trio, httpx2,
# jinja2, itsdangerous, python-multipart, inline-snapshot, opentelemetry-sdk, dirty-equals,
# blockbuster); PEER_INSTALL=1 installs them with pip first. Logs go to $OUT (default
# build/peer). PEER_LOOPS (default "asyncio") lists the loops anyio's asyncio backend runs on:
# asyncio, uvloop, cicada. Exit status: 0 when every mode ran (failures are reported, not fatal),
# unless PEER_EXPECT names a list of expected failures (tests/peer/expected_failures.txt): then 1
# when a run did not finish or a test not listed failed.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
st=${1:?usage: peer_tests.sh STARLETTE_TREE FASTAPI_TREE [MODE...]}
fa=${2:?usage: peer_tests.sh STARLETTE_TREE FASTAPI_TREE [MODE...]}
shift 2
modes=${*:-plain subclass accelerate}
st=$(cd "$st" && pwd); fa=$(cd "$fa" && pwd)
PY=${PY:-$here/.venv/bin/python}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac # a relative path: the runs cd into the trees
OUT=${OUT:-$here/build/peer}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) # the runs cd into the trees
if [ "${PEER_INSTALL:-0}" = 1 ]; then
    "$PY" -m pip install -q trio httpx2 jinja2 itsdangerous python-multipart inline-snapshot \
        opentelemetry-sdk dirty-equals blockbuster
fi

# The selections: every peer test file that uses BaseHTTPMiddleware or @app.middleware("http")
# (grep their tests/ for both); test_base.py is Starlette's own BaseHTTPMiddleware suite.
starlette_sel="tests/middleware/test_base.py tests/middleware/test_body_limit.py
    tests/middleware/test_middleware.py tests/test_staticfiles.py tests/test_templates.py"
fastapi_sel="tests/test_dependency_contextmanager.py tests/test_dependency_contextvars.py
    tests/test_frontend.py tests/test_request_body_limits.py tests/test_telemetry/test_http.py
    tests/test_tutorial/test_middleware"

run() { # name tree mode loop selection...
    local name=$1 tree=$2 mode=$3 loop=$4
    shift 4
    local log="$OUT/$name-$mode-$loop.log"
    (cd "$tree" && CICADA_PEER_MODE=$mode CICADA_PEER_LOOP=$loop PYTHONPATH="$here/tests/peer${PYTHONPATH:+:$PYTHONPATH}" \
        "$PY" -m pytest -p cicada_peer -p no:cacheprovider -p timeout --timeout 30 -q -rfE "$@" \
        >"$log" 2>&1)
    local summary
    summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -1 | tr -d '=')
    printf '%-10s %-10s %-8s %s\n' "$name" "$mode" "$loop" "$summary"
    grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
    grep -E '^cicada peer mode' "$log" | sed 's/^/    /'
    [ -n "${PEER_EXPECT:-}" ] && check "$name" "$mode" "$log" "$summary"
    return 0
}

status=0
check() { # name mode log summary: compare the run's failures with $PEER_EXPECT
    local name=$1 mode=$2 log=$3 summary=$4 id failed expected
    if [ -z "$summary" ]; then
        echo "    UNEXPECTED: the run did not finish (see $log)"
        status=1
        return
    fi
    failed=$(grep -E '^(FAILED|ERROR) ' "$log" | awk '{print $2}')
    expected=$(awk -v n="$name" -v m="$mode" '$1 == n && $2 == m {print $3}' "$PEER_EXPECT")
    for id in $failed; do
        if ! printf '%s\n' "$expected" | grep -qxF -- "$id"; then
            echo "    UNEXPECTED failure: $id"
            status=1
        fi
    done
    for id in $expected; do
        printf '%s\n' "$failed" | grep -qxF -- "$id" ||
            echo "    expected to fail but passed (update $PEER_EXPECT if for good): $id"
    done
}

for loop in ${PEER_LOOPS:-asyncio}; do
    for mode in $modes; do
        # shellcheck disable=SC2086
        run starlette "$st" "$mode" "$loop" $starlette_sel
        # shellcheck disable=SC2086
        run fastapi "$fa" "$mode" "$loop" $fastapi_sel
    done
done
echo "logs: $OUT"
exit $status
