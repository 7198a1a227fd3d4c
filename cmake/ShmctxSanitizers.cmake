# Sanitizer flags as an INTERFACE target. SHMCTX_SANITIZER: "", "address;undefined", "thread".
add_library(shmctx_sanitizers INTERFACE)
if("address" IN_LIST SHMCTX_SANITIZER AND "thread" IN_LIST SHMCTX_SANITIZER)
    message(FATAL_ERROR "SHMCTX_SANITIZER: address and thread cannot be combined")
endif()
if(SHMCTX_SANITIZER)
    list(JOIN SHMCTX_SANITIZER "," _shmctx_san)
    target_compile_options(shmctx_sanitizers INTERFACE
        -fsanitize=${_shmctx_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(shmctx_sanitizers INTERFACE -fsanitize=${_shmctx_san})
    if("thread" IN_LIST SHMCTX_SANITIZER)
        # Standalone fences are invisible to TSan; wake.hpp replaces [wake.storeload] by a
        # seq_cst RMW under this macro (STYLE.md §2.5).
        target_compile_definitions(shmctx_sanitizers INTERFACE SHMCTX_TSAN=1)
        target_compile_options(shmctx_sanitizers INTERFACE $<$<CXX_COMPILER_ID:GNU>:-Wno-tsan>)
    endif()
endif()
