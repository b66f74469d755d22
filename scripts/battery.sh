#!/usr/bin/env bash
# The reliability battery: the scheduler's property-based state-machine test, and a
# coverage-guided fuzzing run of every parser of outside input.
#
#   scripts/battery.sh                         # 1,000 cases x 200 steps (release), 10 s per fuzzer
#   SM_CASES=10000 FUZZ_SECONDS=300 scripts/battery.sh
#
# CI runs it as it is. A failing state-machine case prints its seed and is saved in
# coordinator/tests/state_machine.proptest-regressions, which replays it first on every run; a
# fuzzing crash is saved under fuzz/artifacts/<target>/ (fuzz/README.md says how to replay it).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/swarm/target}"
cases="${SM_CASES:-1000}"
steps="${SM_STEPS:-200}"
profile=()
if [ "${SM_PROFILE:-release}" = release ]; then
    profile=(--release)
fi

echo "== state machine: ${cases} cases of ${steps} steps (${SM_PROFILE:-release} build)"
started=$(date +%s)
PROPTEST_CASES="$cases" SWARM_SM_STEPS="$steps" \
    cargo test "${profile[@]}" --locked -p swarm-coordinator --test state_machine -- --test-threads=4
echo "state machine: ${cases} cases of ${steps} steps passed in $(( $(date +%s) - started )) s"

echo "== fuzz: every target for ${FUZZ_SECONDS:-10} s"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" fuzz/run-short.sh
