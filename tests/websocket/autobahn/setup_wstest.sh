#!/bin/sh
# Makes the Python 2.7 virtual environment that runs the Autobahn testsuite's wstest (Python 2
# only): finds a python2.7 (PYTHON2, then PATH, then pyenv), bootstraps virtualenv (the last
# release that runs on 2.7) into the venv's own folder, and installs requirements-py2.txt pinned.
#
#   tests/websocket/autobahn/setup_wstest.sh VENV
#
# Exits 3, saying so, when no Python 2.7 is found.
set -eu
venv=${1:?usage: setup_wstest.sh VENV}
here=$(cd "$(dirname "$0")" && pwd)
req=$here/requirements-py2.txt
if [ -x "$venv/bin/wstest" ] && [ "$venv/.deps" -nt "$req" ]; then
    exit 0
fi
py2=${PYTHON2:-}
if [ -z "$py2" ]; then
    for c in python2.7 python2 "$(pyenv root 2>/dev/null)/versions/2.7"*/bin/python \
             "${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7"*/bin/python; do
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
            py2=$c
            break
        fi
    done
fi
if [ -n "$py2" ] && ! "$py2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
    echo "autobahn: PYTHON2=$py2 is not a working Python 2.7" >&2
    exit 3
fi
if [ -z "$py2" ]; then
    echo "autobahn: no Python 2.7 found (set PYTHON2=/path/to/python2.7); the Autobahn" \
         "testsuite (wstest) runs only on Python 2.7" >&2
    exit 3
fi
echo "autobahn: making $venv with $py2"
rm -rf "$venv"
mkdir -p "$venv"
venv=$(cd "$venv" && pwd)
# Run from the venv's folder: a stray io.py or similar in the caller's folder would shadow the
# stdlib of Python 2.
cd "$venv"
"$py2" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$venv/.bootstrap" 'virtualenv<20.22'
PYTHONPATH=$venv/.bootstrap "$py2" -m virtualenv -q "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$req"
PYTHONWARNINGS=ignore "$venv/bin/wstest" --help >/dev/null
touch "$venv/.deps"
