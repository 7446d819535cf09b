#!/usr/bin/env bash
# Run the suite (or the part the pytest arguments name) N times in a row from a clean clone of
# this repository's HEAD, then print, per test, how often it failed. With `each` instead of N,
# run each test the arguments select in a pytest of its own, once: no test may rely on another
# having run before it.
#
#   scripts/flake_check.sh N [pytest args...]
#   scripts/flake_check.sh 5 tests/ui/test_browser.py
#   scripts/flake_check.sh 3                      # the whole suite, as `make test` runs it
#   scripts/flake_check.sh each tests/ui/test_browser.py
#
# The clone uses this checkout's virtual environment (`make install` first); PYTHONPATH puts
# the clone's code ahead of the environment's editable install, in pytest and in the servers
# the tests start. Each run's log and JUnit report stay in the folder printed at the start.
set -euo pipefail

runs="${1:?usage: scripts/flake_check.sh N|each [pytest args...]}"
shift
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
test -x "$root/.venv/bin/python" || { echo "no .venv in $root: run make install first" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/flake-check.XXXXXX")"
git clone --quiet "$root" "$work/repo"
ln -s "$root/.venv" "$work/repo/.venv"
cd "$work/repo"
export PYTHONPATH="$work/repo" CI="${CI:-true}"
# With `each`, a run gets its one test id and the options among the arguments, not the paths.
options=()
for arg in "$@"; do [[ "$arg" == -* ]] && options+=("$arg"); done

# One pytest per run: the run's number and the tests it runs.
runs_of() {
    if [ "$runs" = each ]; then
        .venv/bin/python -m pytest -p no:cacheprovider --collect-only -q "$@" | grep '::' | nl -w1 -s' '
    else
        seq 1 "$runs" | sed 's/$/ /'
    fi
}

echo "flake check: $runs run(s) of pytest $* on $(git rev-parse --short HEAD), in $work"
while read -r i test; do
    started=$(date +%s)
    status=0
    if [ -n "$test" ]; then args=("$test" "${options[@]}"); else args=("$@"); fi
    .venv/bin/python -m pytest -p no:cacheprovider --junitxml="$work/run-$i.xml" "${args[@]}" \
        >"$work/run-$i.log" 2>&1 </dev/null || status=$?
    echo "run $i: exit $status in $(( $(date +%s) - started )) s: ${test:-$(tail -n 1 "$work/run-$i.log")}"
done < <(runs_of "$@")
.venv/bin/python scripts/flake_report.py "$work"/run-*.xml
