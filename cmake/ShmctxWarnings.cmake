# Warning flags as an INTERFACE target, linked PRIVATE by our own targets only.
add_library(shmctx_warnings INTERFACE)
target_compile_options(shmctx_warnings INTERFACE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
    -Wold-style-cast -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough
    $<$<CXX_COMPILER_ID:GNU>:-Wno-interference-size>)
if(SHMCTX_WARNINGS_AS_ERRORS)
    target_compile_options(shmctx_warnings INTERFACE -Werror)
endif()
