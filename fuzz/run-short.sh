#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, for CI: builds them all once, runs each for
# FUZZ_SECONDS (20 by default) from its committed corpus, prints one line per target, and
# exits non-zero when any target crashed (a panic, an abort, a timeout or running out of memory).
# New inputs go to a temporary directory, so the committed corpus is left as it is; a crashing
# input is written to fuzz/artifacts/<target>/ (see fuzz/README.md to reproduce it).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/swarm/target}/fuzz}"
# Release with debug assertions and overflow checks. No sanitizer: the swarm crates forbid
# `unsafe`, so what is looked for is panics, and a build without ASan is about twice as fast.
build_flags=(-O -a -s none --target-dir "$target_dir")

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build "${build_flags[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target" "corpus/$target"
    log="$work/$target.log"
    status=ok
    if ! cargo +nightly fuzz run "${build_flags[@]}" "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        status=CRASHED
        failed=1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
    echo "fuzz $target: ${runs:-?} runs in ${seconds}s, $status"
    if [ "$status" != ok ]; then
        grep -E 'panicked at|ERROR: libFuzzer|ALARM|Test unit written to|out-of-memory' "$log" | head -n 5 \
            | sed 's/^/    /'
    fi
done
exit "$failed"
