#!/bin/sh
# The test suite N times in a row with a CPU hog beside it: the check that the tests hold on
# a loaded machine (issue 15). Reports pass/fail per round; exits 1 if any round failed.
#
#   sh ops/stress.sh [ROUNDS] [pytest args...]     e.g. sh ops/stress.sh 5 -m "not slow"
#
# STRESS_HOGS: busy processes beside the suite (default: one per core). Each round's pytest
# output is in STRESS_LOGS (default .stress/round-N.log).
set -u
rounds=${1:-5}
[ $# -gt 0 ] && shift
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
hogs=${STRESS_HOGS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
logs=${STRESS_LOGS:-$here/.stress}
mkdir -p "$logs"
# This checkout's code, also in the workers the tests start from another folder (a venv
# shared with another checkout would otherwise import that one's through its editable path).
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

pids=""
stop_hogs() { [ -n "$pids" ] && kill $pids 2>/dev/null; wait 2>/dev/null; pids=""; }
trap 'stop_hogs; exit 130' INT TERM
trap stop_hogs EXIT
i=0
while [ "$i" -lt "$hogs" ]; do
    "$python" -c "while True: pass" &
    pids="$pids $!"
    i=$((i + 1))
done
echo "stress: $rounds round(s) of pytest $* beside $hogs CPU hog(s); logs in $logs"

failed=0
r=1
while [ "$r" -le "$rounds" ]; do
    start=$(date +%s)
    if (cd "$here" && "$python" -m pytest -q -p no:cacheprovider "$@") >"$logs/round-$r.log" 2>&1; then
        verdict=pass
    else
        verdict=FAIL
        failed=$((failed + 1))
    fi
    summary=$(tail -n 1 "$logs/round-$r.log")
    echo "round $r/$rounds: $verdict in $(( $(date +%s) - start )) s ($summary)"
    r=$((r + 1))
done
stop_hogs
echo "stress: $((rounds - failed))/$rounds rounds passed"
[ "$failed" -eq 0 ]
