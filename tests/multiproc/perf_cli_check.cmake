# `shmctx perf --quick --json F --svg G --md M --save D` end to end (ctest perf_cli_quick): the
# run succeeds, the JSON parses and holds fixed-rate, spill and cancel figures with samples and
# zero loss, the SVG holds both charts with drawn lines (and parses as XML when python3 is
# there), the Markdown report has its header, a table per section and the targets table, and
# --save writes the same report under <date>_<commit>_<cpu>.{txt,md,json,svg}. Speed is never
# checked. Arguments: -DCLI=<shmctx> -DWORK=<dir> -DNS=<namespace>.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/../../bench/perf_report_checks.cmake)

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(json ${WORK}/perf.json)
set(svg ${WORK}/perf.svg)
set(md ${WORK}/perf.md)

# A bad option is a usage error (exit status 2), before anything runs.
execute_process(COMMAND ${CLI} perf --tests bogus RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err MATCHES "--tests")
    fail("'perf --tests bogus': expected exit 2 and a message naming --tests, got ${rc}: ${err}")
endif()

execute_process(COMMAND ${CLI} perf --quick --ns ${NS} --json ${json} --svg ${svg} --md ${md}
                        --save ${WORK}/saved
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
if(NOT rc EQUAL 0)
    fail("shmctx perf --quick exited with ${rc}:\n${err}")
endif()
foreach(section "fixed-rate  64 B  spin  10k/s" "spill under a slow consumer" "cancel latency")
    string(FIND "${out}" "${section}" at)
    if(at EQUAL -1)
        fail("the table has no \"${section}\" section")
    endif()
endforeach()

file(READ ${json} j)
# Fixed rate: every batch has results with samples and a curve.
string(JSON nbatches LENGTH "${j}" batches)
set(fixed 0)
math(EXPR last "${nbatches} - 1")
foreach(i RANGE ${last})
    string(JSON test GET "${j}" batches ${i} test)
    if(test STREQUAL "fixed-rate")
        math(EXPR fixed "${fixed} + 1")
        string(JSON nres LENGTH "${j}" batches ${i} results)
        math(EXPR rlast "${nres} - 1")
        foreach(k RANGE ${rlast})
            string(JSON samples GET "${j}" batches ${i} results ${k} runs 0 corrected samples)
            string(JSON points LENGTH "${j}" batches ${i} results ${k} curve)
            if(samples LESS 1 OR points LESS 2)
                fail("fixed-rate batch ${i} result ${k}: ${samples} samples, ${points} curve points")
            endif()
        endforeach()
    endif()
endforeach()
if(fixed EQUAL 0)
    fail("no fixed-rate batch in the JSON")
endif()
# Spill: zero loss, everything sent received, a depth series, an overrun under the default policy.
string(JSON sent GET "${j}" spill sent)
string(JSON received GET "${j}" spill received)
string(JSON lost GET "${j}" spill lost)
string(JSON overrun GET "${j}" spill overrun_after)
string(JSON depth LENGTH "${j}" spill depth)
string(JSON high GET "${j}" spill high_water)
if(sent LESS 1 OR NOT received EQUAL sent OR NOT lost EQUAL 0)
    fail("spill: sent ${sent}, received ${received}, lost ${lost}")
endif()
if(depth LESS 2 OR high LESS 1 OR overrun LESS 1)
    fail("spill: ${depth} depth samples, high water ${high}, overrun after ${overrun}")
endif()
# Cancel: both kinds measured.
foreach(kind park full)
    string(JSON n GET "${j}" cancel ${kind} samples)
    if(n LESS 1)
        fail("cancel ${kind}: ${n} samples")
    endif()
endforeach()

file(READ ${svg} s)
foreach(needle "<g id=\"latency-curve\">" "<title>Latency percentile curve"
        "<g id=\"spill-depth\">" "<title>Spill depth over time" "</svg>")
    string(FIND "${s}" "${needle}" at)
    if(at EQUAL -1)
        fail("the SVG has no ${needle}")
    endif()
endforeach()
# Lines with points: the latency curves and the spill depth.
string(REGEX MATCHALL "<polyline [^>]*points=\"[0-9.-]+,[0-9.-]+ [0-9.-]+,[0-9.-]+" lines "${s}")
list(LENGTH lines nlines)
if(nlines LESS 2)
    fail("the SVG has ${nlines} polylines with points, expected the curves and the depth line")
endif()
string(FIND "${s}" "<script" script)
string(FIND "${s}" "href=" href)
if(NOT script EQUAL -1 OR NOT href EQUAL -1)
    fail("the SVG is not self-contained (script or reference)")
endif()
find_program(PYTHON3 python3)
if(PYTHON3)
    execute_process(COMMAND ${PYTHON3} -c
                    "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])" ${svg}
                    RESULT_VARIABLE rc ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
        fail("the SVG does not parse as XML: ${err}")
    endif()
endif()
# Markdown: the header, the sections of this run, the targets; then the --save set.
file(READ ${md} m)
perf_check_markdown("${m}" ON)
perf_require("${m}" "### throughput  64 B  spin\n" "### roundtrip  64 B  spin\n"
             "### fixed-rate  64 B  spin  10k/s\n" "### fixed-rate  64 B  spin  100k/s\n"
             "coordinated-omission corrected"
             "| transport | p50 | p90 | p99 | p99.9 | p99.99 | max | raw p99.9 | raw max | late | achieved | unsent | sustained |"
             "### spill under a slow consumer" "### cancel latency"
             "| call | p50 | p90 | p99 | p99.9 | max |" "| context round trip |")
perf_check_saved(${WORK}/saved "${m}" "${j}" "${out}")
file(REMOVE_RECURSE ${WORK})
