#!/usr/bin/env bash
# Run the suite (or the part the pytest arguments name) N times in a row from a clean clone of
# this repository's HEAD, then print, per test, how often it failed.
#
#   scripts/flake_check.sh N [pytest args...]
#   scripts/flake_check.sh 5 tests/ui/test_browser.py
#   scripts/flake_check.sh 3                      # the whole suite, as `make test` runs it
#
# The clone uses this checkout's virtual environment (`make install` first); PYTHONPATH puts
# the clone's code ahead of the environment's editable install, in pytest and in the servers
# the tests start. Each run's log and JUnit report stay in the folder printed at the start.
set -euo pipefail

runs="${1:?usage: scripts/flake_check.sh N [pytest args...]}"
shift
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
test -x "$root/.venv/bin/python" || { echo "no .venv in $root: run make install first" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/flake-check.XXXXXX")"
git clone --quiet "$root" "$work/repo"
ln -s "$root/.venv" "$work/repo/.venv"
echo "flake check: $runs run(s) of pytest $* on $(git -C "$work/repo" rev-parse --short HEAD), in $work"

cd "$work/repo"
for i in $(seq 1 "$runs"); do
    started=$(date +%s)
    status=0
    PYTHONPATH="$work/repo" CI="${CI:-true}" .venv/bin/python -m pytest -p no:cacheprovider \
        --junitxml="$work/run-$i.xml" "$@" >"$work/run-$i.log" 2>&1 || status=$?
    echo "run $i: exit $status in $(( $(date +%s) - started )) s: $(tail -n 1 "$work/run-$i.log")"
done
.venv/bin/python scripts/flake_report.py "$work"/run-*.xml
