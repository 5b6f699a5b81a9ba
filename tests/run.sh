#!/bin/sh
# run.sh - every test of `make test`, in three layers, and one closing summary line:
#   1. unit tests (table-driven, built with ASan + UBSan)
#   2. a short run of each fuzz target over its seed corpus
#   3. system tests: the real daemon with real clients (pytest), once with the optimised
#      binary and once with the ASan binary (which also checks for leaks at exit)
# Prints "N passed, N failed" last; exits non-zero when anything failed.
set -u
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
PY=/usr/bin/python3
passed=0
failed=0
fail_names=""

count() {  # count NAME STATUS: one result
    if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fail_names="$fail_names $1"; fi
}

echo "== unit tests (ASan + UBSan)"
for t in build/asan/tests/test_*; do
    [ -x "$t" ] || continue
    "$t"
    count "$(basename "$t")" $?
done

echo "== fuzz targets (${FUZZ_SECONDS}s each)"
for f in build/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    [ -d "$corpus" ] && cp "$corpus"/* "$work"/ 2>/dev/null
    "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 "$work" >"$work.log" 2>&1
    st=$?
    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' "$work.log" | sed "s/^/$name: /"
    count "$name" $st
    rm -rf "$work" "$work.log"
done

# The two passes run side by side: most of their time is spent waiting on peers and
# timeouts, not on the CPU. Each uses its own free ports and temporary directories.
echo "== system tests (build/ringrelay and build/asan/ringrelay, in parallel)"
out=$(mktemp -d)
chmod 755 "$out"  # the peers' own users (postfix, dovecot) reach their files under it
RINGRELAY_BIN=build/ringrelay $PY -m pytest -q -p no:cacheprovider tests/system \
    >"$out/opt" 2>&1 &
opt=$!
RINGRELAY_BIN=build/asan/ringrelay $PY -m pytest -q -p no:cacheprovider \
    --basetemp="$out/asan-tmp" tests/system >"$out/asan" 2>&1
st_asan=$?
wait $opt
st_opt=$?
echo "-- build/ringrelay"; cat "$out/opt"
count system $st_opt
echo "-- build/asan/ringrelay"; cat "$out/asan"
count system-asan $st_asan
rm -rf "$out"

[ -n "$fail_names" ] && echo "failed:$fail_names"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
