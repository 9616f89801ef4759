#!/bin/bash
# Runs one fuzz target until it has used CPU_SECONDS of CPU time (default 3600: the "one
# CPU-hour" of the fuzzing goal, measured as the process's user + system time, not wall time,
# so a loaded machine does not shorten the run), or EXECUTIONS inputs, whichever comes first;
# then interrupts it so libFuzzer prints its final statistics. Builds the target first.
#
#   fuzz/run-long.sh <target> [CPU_SECONDS [EXECUTIONS]]
#   fuzz/run-long.sh squashfs_extract            # one CPU-hour
#   fuzz/run-long.sh cpio_reader 3600 10000000   # 10^7 executions or one CPU-hour
#
# New inputs go to $FUZZ_WORK_DIR/corpus/<target> (default /var/tmp/bootfactory-fuzz), crash
# inputs to $FUZZ_WORK_DIR/<target>-crash-*; the log is $FUZZ_WORK_DIR/<target>.log and ends
# with "exit=<libFuzzer status> cpu_s=<cpu seconds> wall_s=<wall seconds>". Honours
# CARGO_TARGET_DIR like run-ci.sh.
set -eu
t=$1
cpu_limit=${2:-3600}
runs=${3:--1}
here=$(cd "$(dirname "$0")" && pwd)
work=${FUZZ_WORK_DIR:-/var/tmp/bootfactory-fuzz}
mkdir -p "$work/corpus/$t"
cd "$here"
cargo +nightly fuzz build -O "$t"
bin="${CARGO_TARGET_DIR:-$here/target}/x86_64-unknown-linux-gnu/release/$t"
set -- "$work/corpus/$t" "corpus/$t"
[ -d "regressions/$t" ] && set -- "$@" "regressions/$t"
start=$(date +%s)
"$bin" "$@" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -runs="$runs" \
    -artifact_prefix="$work/$t-" > "$work/$t.log" 2>&1 &
pid=$!
tck=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    if read -r -a stat < "/proc/$pid/stat" 2>/dev/null; then
        cpu=$(( (stat[13] + stat[14]) / tck ))
        [ "$cpu" -ge "$cpu_limit" ] && kill -INT "$pid" 2>/dev/null
    fi
    sleep 5
done
rc=0
wait "$pid" || rc=$?
echo "exit=$rc cpu_s=$cpu wall_s=$(( $(date +%s) - start ))" >> "$work/$t.log"
tail -n 8 "$work/$t.log"
