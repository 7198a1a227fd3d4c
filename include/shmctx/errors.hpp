// shmctx error types. Thread-safety: immutable value types, safe to share after construction.
//
// Setup, teardown and protocol failures are exceptions derived from shmctx::Error, which is a
// std::runtime_error carrying a std::error_code in shmctx's own category (DESIGN.md §5,
// STYLE.md §2.4). Hot-path outcomes (full, empty, closed) are never exceptions: they are
// [[nodiscard]] result enums on the try_* calls.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace shmctx {

/// Error codes of shmctx's error category.
enum class Errc : int {
    protocol_error = 1,  ///< a peer wrote something invalid into shared memory
    layout_error,        ///< magic, layout or protocol version mismatch
    decode_error,        ///< a payload failed verification or has the wrong file identifier
    shm_exhausted,       ///< /dev/shm (or the arena) has no room for an allocation
    permission_denied,   ///< a segment is owned by another user or has the wrong mode
    actor_not_found,     ///< no live actor of that name in that namespace
    invalid_name,        ///< an actor or namespace name that cannot form a segment name
    name_taken,          ///< another live actor holds that name
    system_error,        ///< an unexpected system call failure (see message)
};

const std::error_category& error_category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace shmctx

template <>
struct std::is_error_code_enum<shmctx::Errc> : std::true_type {};

namespace shmctx {

/// Base of every exception shmctx throws (except shmctx::Cancelled, which deliberately is not a
/// std::exception).
class Error : public std::runtime_error {
public:
    Error(Errc code, const std::string& what)
        : std::runtime_error(what), code_(make_error_code(code)) {}
    const std::error_code& code() const noexcept { return code_; }

private:
    std::error_code code_;
};

#define SHMCTX_DEFINE_ERROR(Name, code_value)                                     \
    class Name : public Error {                                                   \
    public:                                                                       \
        explicit Name(const std::string& what) : Error(Errc::code_value, what) {} \
    }

/// A peer wrote an invalid index, length, kind, offset or generation: fails that link only.
SHMCTX_DEFINE_ERROR(ProtocolError, protocol_error);
/// A shared structure has the wrong magic, layout or protocol version; names both versions.
SHMCTX_DEFINE_ERROR(LayoutError, layout_error);
/// A payload failed FlatBuffers verification or its file identifier check.
SHMCTX_DEFINE_ERROR(DecodeError, decode_error);
/// No room in /dev/shm (detected by posix_fallocate, so never a SIGBUS later) or in an arena.
SHMCTX_DEFINE_ERROR(ShmExhausted, shm_exhausted);
/// A segment owned by another user, or access refused by the kernel.
SHMCTX_DEFINE_ERROR(PermissionDenied, permission_denied);
/// No live actor of that name; the message names the actor and the namespace.
SHMCTX_DEFINE_ERROR(ActorNotFound, actor_not_found);
/// A name that is empty, too long or has characters outside [A-Za-z0-9_-].
SHMCTX_DEFINE_ERROR(InvalidName, invalid_name);
/// Another live actor holds the name.
SHMCTX_DEFINE_ERROR(NameTaken, name_taken);
/// An unexpected system call failure; the message has the call, the object and strerror.
SHMCTX_DEFINE_ERROR(SystemError, system_error);

#undef SHMCTX_DEFINE_ERROR

}  // namespace shmctx
