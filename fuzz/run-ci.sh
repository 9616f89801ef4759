#!/bin/sh
# Builds every cargo-fuzz target and runs each one briefly over its committed corpus (and the
# committed regression inputs). Exits non-zero if any target crashes, times out or fails to
# build. New inputs libFuzzer finds go to a scratch directory, never into the worktree.
#
#   fuzz/run-ci.sh                  # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=300 fuzz/run-ci.sh cpio_reader layer_tar
#
# Environment:
#   FUZZ_SECONDS      seconds of fuzzing per target (default 20)
#   FUZZ_TOOLS_DIR    where cargo-fuzz is installed if missing
#                     (default $HOME/.cache/bootfactory/tools, `cargo install --root`)
#   FUZZ_WORK_DIR     scratch corpus and crash artifacts (default: a new temp dir, kept only
#                     when something crashed)
#   FUZZ_BUILD_FLAGS  cargo-fuzz build flags (default "-O": release without debug assertions;
#                     "-a" adds debug assertions and overflow checks, a separate full build)
#   FUZZ_SEED         libFuzzer seed (default: random); a fixed seed makes a CI run repeat
#                     the same mutations for the same build
#   CARGO_TARGET_DIR  honoured (cargo-fuzz otherwise builds into fuzz/target)
# Needs a nightly toolchain (`rustup toolchain install nightly`).
set -eu

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_TOOLS_DIR=${FUZZ_TOOLS_DIR:-${HOME:-/root}/.cache/bootfactory/tools}
FUZZ_BUILD_FLAGS=${FUZZ_BUILD_FLAGS:--O}
CARGO_FUZZ_VERSION=0.13.2

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "run-ci.sh: a nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 2
fi

export PATH="$FUZZ_TOOLS_DIR/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run-ci.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_TOOLS_DIR"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$FUZZ_TOOLS_DIR"
fi

if [ $# -gt 0 ]; then
    targets=$*
else
    targets=$(cargo +nightly fuzz list)
fi

# shellcheck disable=SC2086 # FUZZ_BUILD_FLAGS is a list of flags
start=$(date +%s)
echo "run-ci.sh: building $(echo "$targets" | wc -w) targets"
if [ $# -gt 0 ]; then
    for t in $targets; do
        cargo +nightly fuzz build $FUZZ_BUILD_FLAGS "$t"
    done
else
    cargo +nightly fuzz build $FUZZ_BUILD_FLAGS
fi
built=$(date +%s)
echo "run-ci.sh: build took $((built - start)) s"

work=${FUZZ_WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/bootfactory-fuzz-ci.XXXXXX")}
mkdir -p "$work"
failed=""
for t in $targets; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    set -- "$work/corpus/$t" "corpus/$t"
    [ -d "regressions/$t" ] && set -- "$@" "regressions/$t"
    echo "run-ci.sh: fuzzing $t for ${FUZZ_SECONDS}s"
    if ! cargo +nightly fuzz run $FUZZ_BUILD_FLAGS "$t" "$@" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 ${FUZZ_SEED:+-seed=$FUZZ_SEED} \
        -artifact_prefix="$work/artifacts/$t/" -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        failed="$failed $t"
        tail -n 60 "$work/$t.log" >&2
        echo "run-ci.sh: $t FAILED; reproducer(s) in $work/artifacts/$t/:" >&2
        ls -l "$work/artifacts/$t/" >&2
    else
        grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec' "$work/$t.log" |
            sed "s/^/run-ci.sh: $t /"
    fi
done
end=$(date +%s)
echo "run-ci.sh: total $((end - start)) s (build $((built - start)) s, fuzzing $((end - built)) s)"

if [ -n "$failed" ]; then
    echo "run-ci.sh: crashes in:$failed (logs and artifacts kept in $work)" >&2
    exit 1
fi
[ -z "${FUZZ_WORK_DIR:-}" ] && rm -rf "$work"
exit 0
