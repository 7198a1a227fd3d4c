#!/usr/bin/env bash
# ctest fixture: "setup" removes leftovers of test namespaces from an earlier aborted run;
# "check" fails if this run left any shared-memory object of a test namespace behind.
set -u
mode=${1:-check}
shopt -s nullglob
left=(/dev/shm/shmctx."$(id -u)".test-*)
if [ ${#left[@]} -eq 0 ]; then
    echo "no test objects in /dev/shm"
    exit 0
fi
if [ "$mode" = setup ]; then
    echo "removing ${#left[@]} leftovers of an earlier run"
    rm -f -- "${left[@]}"
    exit 0
fi
echo "LEAK: this test run left ${#left[@]} objects in /dev/shm:"
printf '  %s\n' "${left[@]}"
rm -f -- "${left[@]}"
exit 1
