#include "shmctx/version.hpp"

#include "shmctx/shm/layout.hpp"

// Passed by src/CMakeLists.txt from project(VERSION ...): the one place the version is written.
#if !defined(SHMCTX_VERSION_MAJOR) || !defined(SHMCTX_VERSION_MINOR) || \
    !defined(SHMCTX_VERSION_PATCH) || !defined(SHMCTX_VERSION_STRING)
#error "build version.cpp through CMake: SHMCTX_VERSION_* are not defined"
#endif

namespace shmctx {

Version version() noexcept {
    return Version{SHMCTX_VERSION_MAJOR, SHMCTX_VERSION_MINOR, SHMCTX_VERSION_PATCH,
                   SHMCTX_VERSION_STRING};
}
std::string_view library_version() noexcept { return SHMCTX_VERSION_STRING; }
std::uint32_t layout_version() noexcept { return shm::kLayoutVersion; }
std::uint32_t protocol_version() noexcept { return shm::kProtocolVersion; }

}  // namespace shmctx
