#!/usr/bin/env bash
# Line and branch coverage of fastnn under the test suite (or the tests given), child
# processes included: the NUMBA_DISABLE_JIT run of tests/kernels/test_numba_python_mode.py
# (the only run in which coverage can see the Numba kernels' lines: compiled, they are
# machine code), the CLI, fork and reliability children. Settings: [tool.coverage.*] in
# pyproject.toml (patch = ["subprocess"] starts coverage in every child Python).
#
#   tools/coverage.sh                         # the whole suite (about twice as long)
#   tools/coverage.sh tests/kernels -x        # any pytest arguments
#   COVERAGE_HTML=1 tools/coverage.sh ...     # and an HTML report in htmlcov/
#
# Needs the cov extra (pip install -e ".[test,cov]"). .ci/run runs it on the Numba
# kernels' no-JIT run only: on the whole suite coverage costs 65-80% (CONTRIBUTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export COVERAGE_RCFILE="$PWD/pyproject.toml"
data_dir=$(mktemp -d)
trap 'rm -rf "$data_dir"' EXIT
# Every process (children in other working directories too) writes here.
export COVERAGE_FILE="$data_dir/.coverage"
status=0
# -n 0: in this process (the suite's default spreads it over xdist workers)
python -m coverage run -m pytest -n 0 "$@" || status=$?
python -m coverage combine --quiet "$data_dir"
python -m coverage report --skip-covered --sort=cover
if [[ -n "${COVERAGE_HTML:-}" ]]; then
    python -m coverage html --directory htmlcov
fi
exit "$status"
