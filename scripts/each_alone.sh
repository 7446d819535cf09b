#!/usr/bin/env bash
# Run each test of a module on its own (`pytest path::test`, a fresh pytest each), from a clean
# clone of this repository's HEAD: no test may rely on another having run before it.
#
#   scripts/each_alone.sh tests/ui/test_browser.py [more pytest args...]
#
# Uses this checkout's virtual environment, like scripts/flake_check.sh; prints one line per
# test and exits 1 when any failed. Logs and JUnit reports stay in the folder printed first.
set -euo pipefail

module="${1:?usage: scripts/each_alone.sh tests/path/test_module.py [pytest args...]}"
shift
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
test -x "$root/.venv/bin/python" || { echo "no .venv in $root: run make install first" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/each-alone.XXXXXX")"
git clone --quiet "$root" "$work/repo"
ln -s "$root/.venv" "$work/repo/.venv"
cd "$work/repo"
mapfile -t tests < <(PYTHONPATH="$work/repo" .venv/bin/python -m pytest -p no:cacheprovider \
    --collect-only -q "$module" "$@" | grep '::')
echo "each alone: ${#tests[@]} tests of $module on $(git rev-parse --short HEAD), in $work"
failed=0
for i in "${!tests[@]}"; do
    started=$(date +%s)
    status=0
    PYTHONPATH="$work/repo" CI="${CI:-true}" .venv/bin/python -m pytest -p no:cacheprovider \
        --junitxml="$work/run-$i.xml" "${tests[$i]}" "$@" >"$work/run-$i.log" 2>&1 || status=$?
    [ "$status" = 0 ] || failed=$((failed + 1))
    echo "exit $status in $(( $(date +%s) - started )) s: ${tests[$i]}"
done
echo "$(( ${#tests[@]} - failed )) of ${#tests[@]} passed alone"
[ "$failed" = 0 ]
