# Generates C++ headers from schemas/*.fbs with Debian's flatc at build time (never committed).
set(SHMCTX_GENERATED_DIR ${PROJECT_BINARY_DIR}/generated)
function(shmctx_flatbuffers_generate target)
    set(outputs)
    foreach(schema IN LISTS ARGN)
        get_filename_component(stem ${schema} NAME_WE)
        set(out ${SHMCTX_GENERATED_DIR}/shmctx/${stem}_generated.h)
        add_custom_command(
            OUTPUT ${out}
            COMMAND flatbuffers::flatc --cpp --scoped-enums
                    -o ${SHMCTX_GENERATED_DIR}/shmctx ${schema}
            DEPENDS ${schema} flatbuffers::flatc
            COMMENT "flatc ${stem}.fbs"
            VERBATIM)
        list(APPEND outputs ${out})
    endforeach()
    add_custom_target(${target}_gen DEPENDS ${outputs})
    add_library(${target} INTERFACE)
    add_dependencies(${target} ${target}_gen)
    target_include_directories(${target} INTERFACE
        $<BUILD_INTERFACE:${SHMCTX_GENERATED_DIR}>
        $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    target_link_libraries(${target} INTERFACE flatbuffers::flatbuffers)
endfunction()
