#!/usr/bin/env bash
# ctest fixture: "setup" removes leftovers of test namespaces from an earlier aborted run;
# "check BUILD_DIR" fails if this run left any shared-memory object of a test namespace behind,
# or any process of the build tree's executables: a helper still running (an orphan) or a zombie
# (a child nobody reaped).
set -u
mode=${1:-check}
build_dir=${2:-}
shopt -s nullglob
status=0

if [ "$mode" = check ] && [ -n "$build_dir" ]; then
    build_dir=$(cd "$build_dir" && pwd -P)
    # Process names as the kernel keeps them (comm: the first 15 bytes of the file name).
    declare -A ours=()
    while IFS= read -r name; do ours["${name:0:15}"]=1; done < <(
        find "$build_dir" -maxdepth 3 -type f -perm -u+x -printf '%f\n' 2>/dev/null)
    stray=()
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = "$$" ] && continue
        stat=$(cat "$proc/stat" 2>/dev/null) || continue
        rest=${stat##*) }          # after the comm field, which may hold spaces
        state=${rest%% *}
        comm=${stat#*(}
        comm=${comm%)*}
        exe=$(readlink "$proc/exe" 2>/dev/null || true)
        if [[ "$exe" == "$build_dir"/* ]]; then
            stray+=("pid $pid ($state) $exe")
        elif [ "$state" = Z ] && [ -n "${ours[$comm]:-}" ]; then
            stray+=("pid $pid (zombie) $comm")
        fi
    done
    if [ ${#stray[@]} -gt 0 ]; then
        echo "LEAK: this test run left ${#stray[@]} processes of $build_dir:"
        printf '  %s\n' "${stray[@]}"
        status=1
    else
        echo "no process of the build tree left (no orphan, no zombie)"
    fi
fi

# Objects of a namespace "test-<pid>-..." (test::unique_ns) whose test process still runs belong
# to another test run working in parallel (another build tree, a developer's run): neither
# removed nor counted. Every other test object is this run's, or an earlier aborted run's.
prefix=/dev/shm/shmctx."$(id -u)".
left=()
for object in "$prefix"test-*; do
    ns=${object#"$prefix"}
    ns=${ns%%.*}
    if [[ "$ns" =~ ^test-([0-9]+)- ]] && [ -d "/proc/${BASH_REMATCH[1]}" ]; then
        continue
    fi
    left+=("$object")
done
if [ ${#left[@]} -eq 0 ]; then
    echo "no test objects in /dev/shm"
    exit $status
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
