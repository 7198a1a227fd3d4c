// Identities: actors (Uid), contexts (Cid) and the two sides of a context (Side).
// DESIGN.md §5; wire forms in schemas/shmctx.fbs (tables Uid, struct Cid).
// Thread-safety: value types.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "shmctx/uuid.hpp"

namespace shmctx {

/// An actor's identity: a human name plus the random uuid that *is* the identity. Two Uids are
/// equal when their uuids are (tractor's `Aid` equality, spec §1): an actor restarted under the
/// same name is a different actor, and a name is only a label.
struct Uid {
    std::string name;
    Uuid uuid;

    /// "name@1a2b3c4d" (the first 8 hex digits of the uuid).
    std::string to_string() const;

    friend bool operator==(const Uid& a, const Uid& b) noexcept { return a.uuid == b.uuid; }
};

/// Context id: (uuid of the actor that opened the context, that actor's sequence number).
/// Unique by construction, no randomness per context, and it names the opener. seq 0 = nil.
struct Cid {
    Uuid opener;
    std::uint64_t seq = 0;

    bool is_nil() const noexcept { return seq == 0; }
    /// "1a2b3c4d#17" (opener's short hex, sequence).
    std::string to_string() const;
    friend auto operator<=>(const Cid&, const Cid&) = default;
};

/// The two ends of a context (spec §1 "Context": tractor's ctx.side). The parent opened it
/// with Portal::open_context; the child runs the endpoint.
enum class Side : std::uint8_t { parent, child };

/// "parent" / "child".
constexpr std::string_view to_string(Side s) noexcept {
    return s == Side::parent ? "parent" : "child";
}
constexpr Side opposite(Side s) noexcept { return s == Side::parent ? Side::child : Side::parent; }

namespace detail {
// Uuids are random (version 4), so folding their two halves is already a good hash.
inline std::size_t hash_uuid(const Uuid& u) noexcept {
    std::uint64_t lo = 0;
    std::uint64_t hi = 0;
    std::memcpy(&lo, u.bytes.data(), sizeof lo);
    std::memcpy(&hi, u.bytes.data() + sizeof lo, sizeof hi);
    return static_cast<std::size_t>(lo ^ (hi * 0x9E3779B97F4A7C15ULL));
}
}  // namespace detail

}  // namespace shmctx

template <>
struct std::hash<shmctx::Uuid> {
    std::size_t operator()(const shmctx::Uuid& u) const noexcept {
        return shmctx::detail::hash_uuid(u);
    }
};

/// Consistent with Uid's equality: the name does not take part.
template <>
struct std::hash<shmctx::Uid> {
    std::size_t operator()(const shmctx::Uid& u) const noexcept {
        return shmctx::detail::hash_uuid(u.uuid);
    }
};

template <>
struct std::hash<shmctx::Cid> {
    std::size_t operator()(const shmctx::Cid& c) const noexcept {
        // Sequence numbers of one opener are consecutive: spread them before mixing.
        return shmctx::detail::hash_uuid(c.opener) ^
               static_cast<std::size_t>(c.seq * 0xC2B2AE3D27D4EB4FULL);
    }
};
