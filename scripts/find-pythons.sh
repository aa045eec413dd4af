#!/bin/sh
# Prints one working interpreter per CPython version from 3.12 on (for `make compat`): the one on
# PATH if it runs, else one from pyenv's versions folder. Prints nothing for versions not here.
for v in 3.12 3.13 3.14; do
    for py in "$(command -v python$v 2>/dev/null)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/$v*/bin/python$v; do
        if [ -n "$py" ] && [ -x "$py" ] && "$py" -c 'import sys' >/dev/null 2>&1; then
            echo "$py"
            break
        fi
    done
done
