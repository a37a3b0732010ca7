#!/usr/bin/env bash
# Run the import-gate tests (tests/imports) and the checks of headstart._cpython
# (tests/test_cpython_internals.py) on every supported CPython found under pyenv.
# Each interpreter gets its own venv (.venv310 ... .venv313, reused if present) with pytest
# and headstart installed editable. Exits non-zero if any interpreter fails or is missing.
#   tests/run_gate_all_pythons.sh            # 3.10 3.11 3.12 3.13
#   PYTHONS="3.12 3.13" tests/run_gate_all_pythons.sh -k lazy   # extra args go to pytest
set -u
cd "$(dirname "$0")/.."
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
status=0
for minor in ${PYTHONS:-3.10 3.11 3.12 3.13}; do
    base=$(ls -d "$PYENV_ROOT"/versions/"$minor".* 2>/dev/null | sort -V | tail -1)
    if [ -z "$base" ]; then
        echo "== Python $minor: not found under $PYENV_ROOT/versions" >&2
        status=1
        continue
    fi
    venv=".venv${minor/./}"
    if [ ! -x "$venv/bin/python" ]; then
        "$base/bin/python" -m venv "$venv" &&
            "$venv/bin/pip" install -q pytest &&
            "$venv/bin/pip" install -q -e . --no-deps || { status=1; continue; }
    fi
    echo "== Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])') ($venv)"
    "$venv/bin/python" -m pytest tests/imports tests/test_cpython_internals.py -q -m "not slow" \
        "$@" || status=1
done
exit $status
