// 128-bit random identifiers for actors (DESIGN.md §5 `Uid`). Thread-safety: value type.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmctx {

/// A random (version 4) UUID, stored as 16 bytes. Trivially copyable, so it may live in shared
/// memory.
struct Uuid {
    std::array<std::uint8_t, 16> bytes{};

    /// A fresh random UUID from getrandom(2).
    static Uuid random();
    /// Parses the 32-hex-digit form produced by to_hex(); nullopt-like: returns nil on error.
    static bool parse_hex(std::string_view hex, Uuid& out) noexcept;

    bool is_nil() const noexcept;
    /// 32 lowercase hex digits, no dashes (used in segment names).
    std::string to_hex() const;
    /// The first 8 hex digits, for humans ("name@1a2b3c4d").
    std::string short_hex() const;

    friend auto operator<=>(const Uuid&, const Uuid&) = default;
};

}  // namespace shmctx
