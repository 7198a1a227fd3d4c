# shmctx_perf_harness --quick --md F --save D end to end (ctest perf_harness_quick and
# perf_harness_peers_quick): the run succeeds; the Markdown report has its header, a section per
# test, mode and size or rate, a fixed-rate row with a sustained verdict for every transport at
# every rate, the idle table and (with -DTARGETS=ON) the targets table; --save writes the four
# files of bench/results/ under one stem, its .md the same as --md's. Speed is never checked.
# Arguments: -DHARNESS=<shmctx_perf_harness> -DWORK=<dir> -DNS=<namespace>
# -DTRANSPORTS=<a,b,...> (run, and expected in every fixed-rate table; empty: the default set,
# and every transport of the round-trip table is expected) -DTARGETS=ON|OFF.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/perf_report_checks.cmake)

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(md ${WORK}/report.md)
set(args --quick --ns ${NS} --md ${md} --save ${WORK}/saved)
if(TRANSPORTS)
    list(APPEND args --transports ${TRANSPORTS})
endif()
string(REPLACE "," ";" expect "${TRANSPORTS}")

execute_process(COMMAND ${HARNESS} ${args} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message("${out}")
if(NOT rc EQUAL 0)
    fail("shmctx_perf_harness ${args} exited with ${rc}:\n${err}")
endif()
if(NOT EXISTS ${md})
    fail("no ${md}")
endif()
file(READ ${md} text)
# CMake lists split at ';': sections are matched in a copy without them.
string(REPLACE ";" "," flat "${text}")

perf_check_markdown("${text}" ${TARGETS})
foreach(mode spin block)
    perf_require("${text}" "### roundtrip  64 B  ${mode}\n")
    foreach(rate 10k/s 100k/s 1M/s)
        perf_require("${text}" "### fixed-rate  64 B  ${mode}  ${rate}\n")
    endforeach()
endforeach()
perf_require("${text}" "### idle CPU of a consumer blocked in receive")

# Every fixed-rate table has a row for every transport, ending in its sustained verdict: those
# named, or those of the round-trip table (the default set runs fixed rate for all of them).
if(NOT expect)
    string(REGEX MATCH "### roundtrip  64 B  spin\n[^#]*" rtt "${flat}")
    string(REGEX MATCHALL "\n\\| [a-z0-9-]+ \\| [0-9]" rows "${rtt}")
    foreach(row IN LISTS rows)
        string(REGEX REPLACE "^\n\\| ([a-z0-9-]+) .*" "\\1" name "${row}")
        list(APPEND expect ${name})
    endforeach()
    list(LENGTH expect n)
    if(n LESS 2)
        fail("the round-trip table lists ${n} transports: ${expect}")
    endif()
    message("expected in every fixed-rate table: ${expect}")
endif()
string(REGEX MATCHALL "### fixed-rate [^\n]*\n[^#]*" sections "${flat}")
list(LENGTH sections nsections)
if(NOT nsections EQUAL 6)
    fail("${nsections} fixed-rate sections, expected 6 (2 modes x 3 rates)")
endif()
foreach(section IN LISTS sections)
    string(FIND "${section}" "| transport | p50 | p90 | p99 | p99.9 | p99.99 | max | raw p99.9 | raw max | late | achieved | unsent | sustained |" at)
    if(at EQUAL -1)
        fail("a fixed-rate section without its table header:\n${section}")
    endif()
    foreach(t IN LISTS expect)
        string(REGEX MATCH "\n\\| ${t} \\|[^\n]*\\| (yes|NO \\([0-9]+ of [0-9]+ runs\\)) \\|\n"
               row "${section}")
        if(NOT row)
            fail("no fixed-rate row with a verdict for ${t} in:\n${section}")
        endif()
    endforeach()
endforeach()

perf_check_saved(${WORK}/saved "${text}" "" "${out}")
file(REMOVE_RECURSE ${WORK})
