# Finds moodycamel::ConcurrentQueue (Debian: libconcurrentqueue-dev, headers only, no CMake
# config of its own). Provides shmctx::concurrentqueue (INTERFACE IMPORTED).
find_path(ConcurrentQueue_INCLUDE_DIR NAMES concurrentqueue/concurrentqueue.h)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(ConcurrentQueue REQUIRED_VARS ConcurrentQueue_INCLUDE_DIR)
if(ConcurrentQueue_FOUND AND NOT TARGET shmctx::concurrentqueue)
    add_library(shmctx::concurrentqueue INTERFACE IMPORTED)
    set_target_properties(shmctx::concurrentqueue PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${ConcurrentQueue_INCLUDE_DIR}")
endif()
mark_as_advanced(ConcurrentQueue_INCLUDE_DIR)
