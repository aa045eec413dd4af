#!/bin/sh
# Installs the Debian packages the test suite, fuzzers and benchmarks need, when they are missing.
# Runs apt-get only as root; otherwise it names what is missing and carries on.
set -e
missing=""
command -v clang >/dev/null 2>&1 || missing="$missing clang libclang-rt-14-dev"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
[ -f /usr/include/zlib.h ] || missing="$missing zlib1g-dev"
# Throwaway certificates for the TLS tests (tests/integration/test_tls.py).
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
# Servers the loop's client-library tests start (tests/loop/test_clients.py).
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -n "$missing" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "sysdeps: missing Debian packages:$missing (install them as root); tests needing them skip" >&2
    exit 0
fi
echo "sysdeps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
