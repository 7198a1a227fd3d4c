// Library and protocol versions. Thread-safety: constants and pure functions.
//
// Which version decides what: peers link only when their layout version (shared-memory
// structures) and protocol version (control messages) equal ours, checked in the actor segment
// header (connect), the link arena header (attach) and the LinkOpen record (link set-up); the
// library version is informational, so two builds of different library versions with the same
// layout and protocol versions interoperate (docs/semantics.md §14).
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

namespace shmctx {

/// A library version, from the CMake project version the library was built with.
struct Version {
    std::uint32_t major = 0;
    std::uint32_t minor = 0;
    std::uint32_t patch = 0;
    /// "major.minor.patch", NUL-terminated, static storage.
    const char* text = "0.0.0";

    std::string string() const { return text; }
    /// Compared by number only.
    friend constexpr bool operator==(const Version& a, const Version& b) noexcept {
        return a.major == b.major && a.minor == b.minor && a.patch == b.patch;
    }
    friend constexpr std::strong_ordering operator<=>(const Version& a, const Version& b) noexcept {
        if (a.major != b.major) return a.major <=> b.major;
        if (a.minor != b.minor) return a.minor <=> b.minor;
        return a.patch <=> b.patch;
    }
};

/// The version of the library this program links (not of the headers it was compiled with).
Version version() noexcept;
/// version().text as a string_view: "major.minor.patch".
std::string_view library_version() noexcept;
/// Layout version of shared structures and protocol version of control messages (see
/// docs/protocol.md); peers with other values refuse to link, naming both (LayoutError).
std::uint32_t layout_version() noexcept;
std::uint32_t protocol_version() noexcept;

}  // namespace shmctx
