#include "shmctx/version.hpp"

#include "shmctx/shm/layout.hpp"

namespace shmctx {

std::string_view library_version() noexcept { return "0.1.0"; }
std::uint32_t layout_version() noexcept { return shm::kLayoutVersion; }
std::uint32_t protocol_version() noexcept { return shm::kProtocolVersion; }

}  // namespace shmctx
