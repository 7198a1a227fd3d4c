// Payloads: what a context's start arguments, `started()` value, stream messages and return
// value carry (DESIGN.md §5).
//
//   PayloadView  non-owning {kind, bytes}; from a finished FlatBufferBuilder, a byte span or a
//                string. Like std::string_view it must not outlive what it points at.
//   Payload      owning; `Payload::value(x)` encodes an int64/double/bool/string as a FlexBuffer,
//                `.value<T>()` decodes it, `.as<T>()` verifies a user FlatBuffer and its file
//                identifier. Storage is 8-byte aligned (FlatBuffers reads scalars in place).
//
// Trust: everything that decodes (`value<T>()`, `as<T>()`) verifies first and throws
// DecodeError on any mismatch; nothing reads outside the payload's bytes. A root type is bound
// to its 4-character file identifier once, at global namespace scope:
//
//     SHMCTX_ROOT_TYPE(market::Tick, "TICK");
//     const market::Tick* t = payload.as<market::Tick>();   // verified, identifier checked
//
// `as<T>()` for a type without that declaration does not compile.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "shmctx/errors.hpp"

namespace shmctx {

/// What a payload's bytes are. The numeric values travel on the wire (the `kind` of a control
/// message's Value table, schemas/shmctx.fbs) and never change.
enum class PayloadKind : std::uint8_t {
    empty = 0,       ///< no value: an empty `started()`, a void return
    bytes = 1,       ///< opaque bytes
    string = 2,      ///< UTF-8 text without terminator
    value = 3,       ///< a FlexBuffers scalar or string (`Payload::value`)
    flatbuffer = 4,  ///< a FlatBuffer with a file identifier (`Payload::as<T>()`)
};
inline constexpr std::uint8_t kMaxPayloadKind = 4;

/// "empty", "bytes", "string", "value", "flatbuffer"; "unknown" otherwise.
std::string_view to_string(PayloadKind kind) noexcept;

/// Alignment of every Payload's storage and of every payload inside a ring record.
inline constexpr std::size_t kPayloadAlign = 8;

/// Binds a FlatBuffers root type to its file identifier; specialised by SHMCTX_ROOT_TYPE only.
template <class T>
struct RootType {
    static constexpr bool declared = false;
};

/// True when SHMCTX_ROOT_TYPE(T, "....") was declared for T.
template <class T>
concept DeclaredRootType = RootType<T>::declared;

/// Declares the 4-character file identifier of FlatBuffers root table `T` (as in its schema's
/// `file_identifier`). Use once per type, at global namespace scope, after T's generated header.
#define SHMCTX_ROOT_TYPE(T, ident)                                                              \
    template <>                                                                                 \
    struct shmctx::RootType<T> {                                                                \
        static_assert(sizeof(ident) == 5, "a FlatBuffers file identifier has exactly 4 chars"); \
        static_assert(std::is_base_of_v<::flatbuffers::Table, T>,                               \
                      "SHMCTX_ROOT_TYPE names a generated FlatBuffers table");                  \
        static constexpr bool declared = true;                                                  \
        static constexpr char identifier[5] = ident;                                            \
    }

class Payload;

/// Non-owning {kind, bytes}. Trivially copyable; valid as long as the bytes it views.
/// Thread-safety: value type (concurrent reads are safe).
class PayloadView {
public:
    /// The empty payload (kind empty, no bytes).
    constexpr PayloadView() noexcept = default;
    /// An explicit kind and bytes (e.g. a received record whose kind travelled beside it).
    constexpr PayloadView(PayloadKind kind, std::span<const std::byte> bytes) noexcept
        : kind_(kind), bytes_(bytes) {}
    /// Opaque bytes.
    constexpr PayloadView(std::span<const std::byte> bytes) noexcept  // NOLINT: implicit by design
        : kind_(PayloadKind::bytes), bytes_(bytes) {}
    /// Text.
    PayloadView(std::string_view text) noexcept  // NOLINT(google-explicit-constructor): by design
        : kind_(PayloadKind::string), bytes_(std::as_bytes(std::span(text.data(), text.size()))) {}
    /// Text from a literal or C string (disambiguates from the span overload).
    PayloadView(const char* text) noexcept  // NOLINT(google-explicit-constructor): by design
        : PayloadView(std::string_view(text)) {}
    /// The finished buffer of `fbb` (Finish() must have been called; asserts in debug builds).
    PayloadView(const flatbuffers::FlatBufferBuilder& fbb) noexcept;  // NOLINT: by design
    /// The payload's own view (like std::string -> std::string_view).
    PayloadView(const Payload& payload) noexcept;  // NOLINT(google-explicit-constructor)

    constexpr PayloadKind kind() const noexcept { return kind_; }
    constexpr std::span<const std::byte> bytes() const noexcept { return bytes_; }
    constexpr std::size_t size_bytes() const noexcept { return bytes_.size(); }
    /// True only for the no-value payload; a zero-length string or byte span is not empty.
    constexpr bool empty() const noexcept { return kind_ == PayloadKind::empty; }

private:
    PayloadKind kind_ = PayloadKind::empty;
    std::span<const std::byte> bytes_;
};

namespace detail {
// Size, alignment and file identifier checks before a FlatBuffers Verifier runs; throws
// DecodeError naming the expected identifier.
void check_flatbuffer_frame(std::span<const std::byte> buf, const char* identifier);
[[noreturn]] void throw_verify_failed(std::size_t size_bytes, const char* identifier);
flatbuffers::Verifier::Options payload_verifier_options() noexcept;
}  // namespace detail

/// Verifies `buf` as a FlatBuffer with root T (declared with SHMCTX_ROOT_TYPE) and returns its
/// root, pointing into `buf`. Throws DecodeError when the buffer is misaligned, too short, has
/// another file identifier, or fails the FlatBuffers Verifier (offsets out of bounds, depth or
/// table limits, missing required fields). Every call verifies: keep the pointer.
template <class T>
const T* verified_root(std::span<const std::byte> buf) {
    static_assert(DeclaredRootType<T>,
                  "no file identifier is known for this FlatBuffers type: declare it with "
                  "SHMCTX_ROOT_TYPE(T, \"XXXX\") at global namespace scope");
    detail::check_flatbuffer_frame(buf, RootType<T>::identifier);
    const auto* data = reinterpret_cast<const std::uint8_t*>(buf.data());
    flatbuffers::Verifier verifier(data, buf.size(), detail::payload_verifier_options());
    if (!verifier.VerifyBuffer<T>(RootType<T>::identifier)) {
        detail::throw_verify_failed(buf.size(), RootType<T>::identifier);
    }
    return flatbuffers::GetRoot<T>(data);
}

/// An owning payload. Small payloads (≤ 40 bytes) live inline, larger ones on the heap; both
/// are 8-byte aligned. Copyable (deep copy) and cheaply movable.
/// Thread-safety: value type (concurrent const access is safe).
class Payload {
public:
    /// The empty payload.
    Payload() noexcept = default;
    Payload(const Payload& other);
    Payload& operator=(const Payload& other);
    Payload(Payload&& other) noexcept;
    Payload& operator=(Payload&& other) noexcept;
    ~Payload() = default;

    /// A FlexBuffers value: bool, any integer that fits int64 (std::out_of_range otherwise),
    /// float/double, or text (std::string, std::string_view, const char*).
    template <class T>
    static Payload value(const T& v) {
        using U = std::remove_cvref_t<T>;
        if constexpr (std::same_as<U, bool>) {
            return encode_bool(v);
        } else if constexpr (std::integral<U>) {
            if (!std::in_range<std::int64_t>(v)) {
                throw std::out_of_range("Payload::value: integer does not fit int64");
            }
            return encode_int(static_cast<std::int64_t>(v));
        } else if constexpr (std::floating_point<U>) {
            return encode_double(static_cast<double>(v));
        } else if constexpr (std::convertible_to<const U&, std::string_view>) {
            return encode_string(std::string_view(v));
        } else {
            static_assert(sizeof(U) == 0,
                          "Payload::value takes bool, an integer, a floating-point number or text");
        }
    }

    /// A copy of `view`'s kind and bytes into aligned storage.
    static Payload copy(PayloadView view);

    PayloadKind kind() const noexcept { return kind_; }
    PayloadView view() const noexcept { return {kind_, bytes()}; }
    std::span<const std::byte> bytes() const noexcept { return {data(), size_}; }
    std::size_t size_bytes() const noexcept { return size_; }
    /// True only for the no-value payload.
    bool empty() const noexcept { return kind_ == PayloadKind::empty; }

    /// Decodes a `Payload::value`: T = bool, an integer type (range-checked), double/float,
    /// std::string or std::string_view (a view into this payload). Text also decodes from a
    /// payload of kind string. Throws DecodeError on a kind or type mismatch, an integer out of
    /// T's range, or a corrupt FlexBuffer.
    template <class T>
    T value() const {
        if constexpr (std::same_as<T, bool>) {
            return decode_bool();
        } else if constexpr (std::integral<T>) {
            const std::int64_t v = decode_int();
            if (!std::in_range<T>(v)) {
                throw_int_range(v);
            }
            return static_cast<T>(v);
        } else if constexpr (std::floating_point<T>) {
            return static_cast<T>(decode_double());
        } else if constexpr (std::same_as<T, std::string_view>) {
            return decode_string();
        } else if constexpr (std::same_as<T, std::string>) {
            return std::string(decode_string());
        } else {
            static_assert(sizeof(T) == 0,
                          "Payload::value<T>: T is bool, an integer, double/float, std::string "
                          "or std::string_view");
        }
    }

    /// The verified root of a FlatBuffer payload (kind flatbuffer or bytes) whose file
    /// identifier is T's (SHMCTX_ROOT_TYPE). Points into this payload. DecodeError otherwise.
    template <class T>
    const T* as() const {
        static_assert(DeclaredRootType<T>,
                      "Payload::as<T>(): no file identifier is known for T: declare it with "
                      "SHMCTX_ROOT_TYPE(T, \"XXXX\") at global namespace scope");
        check_flatbuffer_kind();
        return verified_root<T>(bytes());
    }

private:
    static constexpr std::size_t kInlineBytes = 40;

    static Payload encode_bool(bool v);
    static Payload encode_int(std::int64_t v);
    static Payload encode_double(double v);
    static Payload encode_string(std::string_view v);
    bool decode_bool() const;
    std::int64_t decode_int() const;
    double decode_double() const;
    std::string_view decode_string() const;
    [[noreturn]] static void throw_int_range(std::int64_t v);
    void check_flatbuffer_kind() const;

    /// Sets kind and size and returns writable storage of `size` bytes (inline or heap).
    std::byte* allocate(PayloadKind kind, std::size_t size);
    const std::byte* data() const noexcept {
        return size_ <= kInlineBytes ? inline_ : reinterpret_cast<const std::byte*>(heap_.get());
    }

    PayloadKind kind_ = PayloadKind::empty;
    std::size_t size_ = 0;
    std::unique_ptr<std::uint64_t[]> heap_;  // uint64_t words: 8-byte alignment
    alignas(kPayloadAlign) std::byte inline_[kInlineBytes]{};
};

}  // namespace shmctx
