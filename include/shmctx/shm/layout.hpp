// Constants shared by every shared-memory layout (DESIGN.md §2 "Layout rules").
// Thread-safety: constants only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmctx::shm {

/// Fixed cache-line size for layouts. Never std::hardware_destructive_interference_size: it can
/// differ between compilers or -mtune, and both sides of a mapping must agree (STYLE.md §1).
inline constexpr std::size_t kCacheLine = 64;
/// Hot words written by different processes are kept this far apart (adjacent-line prefetch).
inline constexpr std::size_t kFalseSharingRange = 128;

/// Bumped on any change of a shared structure's size or field offsets.
inline constexpr std::uint32_t kLayoutVersion = 3;
/// Bumped on any change of message meaning on the control ring.
inline constexpr std::uint32_t kProtocolVersion = 2;

/// Rounds `v` up to a multiple of `align` (a power of two).
constexpr std::size_t align_up(std::size_t v, std::size_t align) noexcept {
    return (v + align - 1) & ~(align - 1);
}

static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace shmctx::shm
