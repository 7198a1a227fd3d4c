# Checks of the harness's report files shared by the ctest scripts bench/perf_md_check.cmake
# (shmctx_perf_harness) and tests/multiproc/perf_cli_check.cmake (`shmctx perf`), run with -P.

# Ends the script with "<script name>: <what>".
function(fail what)
    get_filename_component(script ${CMAKE_SCRIPT_MODE_FILE} NAME_WE)
    message(FATAL_ERROR "${script}: ${what}")
endfunction()

# Fails unless the Markdown report `md` (its text) contains every further argument.
function(perf_require md)
    foreach(needle IN LISTS ARGN)
        string(FIND "${md}" "${needle}" at)
        if(at EQUAL -1)
            fail("the Markdown report has no \"${needle}\"")
        endif()
    endforeach()
endfunction()

# The Markdown report `md` (its text): the header table, the placement table, and with
# `targets` the targets table with at least one row holding a value, a bar and a result.
function(perf_check_markdown md targets)
    perf_require("${md}" "# shmctx perf harness: " "| run | value |\n" "| commit | "
                 "| date (UTC) | " "| cpu | " "| build | " "| placement | " "| runs | "
                 "### placement of each section\n"
                 "| section | c2c round trip | c2c min | memcpy GB/s |\n")
    if(targets)
        perf_require("${md}"
            "### DESIGN.md §8 targets (ratios of medians within one batch)\n\n| target | measured | bar | result |\n|:---|---:|---:|---:|\n")
        string(REGEX MATCH
               "\n\\| [^\n]+ \\| [0-9.]+ \\| (>=|<=) [0-9.e+-]+ \\| (met|not met|info) \\|\n"
               row "${md}")
        if(NOT row)
            fail("the Markdown targets table has no row with a value, a bar and a result")
        endif()
    endif()
endfunction()

# The --save set in `dir`: the four files of one <date>_<commit>_<cpu> stem, whose .md equals
# `md`, whose .json equals `json` (unless empty) and whose .txt is part of `stdout`.
function(perf_check_saved dir md json stdout)
    file(GLOB saved RELATIVE ${dir} ${dir}/*)
    list(LENGTH saved nsaved)
    set(stem "")
    if(nsaved GREATER 0)
        list(GET saved 0 first)
        string(REGEX REPLACE "\\.[a-z]+$" "" stem "${first}")
    endif()
    if(NOT nsaved EQUAL 4 OR
       NOT stem MATCHES "^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]_[0-9a-z-]+_[a-z0-9-]+$")
        fail("--save wrote \"${saved}\", expected <date>_<commit>_<cpu>.{json,md,svg,txt}")
    endif()
    foreach(ext json md svg txt)
        if(NOT EXISTS ${dir}/${stem}.${ext})
            fail("--save wrote ${saved}: no ${stem}.${ext}")
        endif()
    endforeach()
    file(READ ${dir}/${stem}.md saved_md)
    if(NOT saved_md STREQUAL md)
        fail("--save's ${stem}.md differs from --md's report")
    endif()
    file(READ ${dir}/${stem}.json saved_json)
    if(NOT json STREQUAL "" AND NOT saved_json STREQUAL json)
        fail("--save's ${stem}.json differs from --json's")
    endif()
    file(READ ${dir}/${stem}.txt saved_txt)
    string(FIND "${stdout}" "${saved_txt}" at)
    if(at EQUAL -1)
        fail("--save's ${stem}.txt is not the table printed on stdout")
    endif()
endfunction()
