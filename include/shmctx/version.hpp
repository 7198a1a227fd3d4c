// Library and protocol versions. Thread-safety: constants and pure functions.
#pragma once

#include <cstdint>
#include <string_view>

namespace shmctx {

/// "major.minor.patch" of the library this program links.
std::string_view library_version() noexcept;
/// Layout version of shared structures and protocol version of control messages (see
/// docs/protocol.md); peers with other values refuse to link, naming both.
std::uint32_t layout_version() noexcept;
std::uint32_t protocol_version() noexcept;

}  // namespace shmctx
