// Record kinds carried in the ring's 16-byte record header (DESIGN.md §3).
// Thread-safety: constants only.
#pragma once

#include <cstdint>

namespace shmctx::wire {

/// The `kind` field of a ring record header.
enum class RecordKind : std::uint16_t {
    padding = 0,  ///< wrap padding: skip to the start of the ring
    data = 1,     ///< a stream message (raw bytes or a FlatBuffer)
    control = 2,  ///< a control message (schemas/shmctx.fbs; framed by `len`, not size-prefixed)
};

/// True for the kinds this protocol version defines.
bool is_known_kind(std::uint16_t kind) noexcept;

}  // namespace shmctx::wire
