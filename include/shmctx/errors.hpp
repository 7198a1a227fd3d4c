// shmctx error types. Thread-safety: immutable value types, safe to share after construction.
//
// Setup, teardown and protocol failures are exceptions derived from shmctx::Error, which is a
// std::runtime_error carrying a std::error_code in shmctx's own category (DESIGN.md §5,
// STYLE.md §2.4). Hot-path outcomes (full, empty, closed) are never exceptions: they are
// [[nodiscard]] result enums on the try_* calls.
//
// Semantic failures ported from tractor (spec §3.8, DESIGN.md §4) are the second half of this
// file: RemoteActorError (a boxed error from another actor) and ContextCancelled, StreamOverrun,
// EndOfChannel, ..., plus the error-type registry that maps C++ exception types to stable wire
// names and back (docs/protocol.md "Errors").
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "shmctx/ids.hpp"

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
    remote_actor_error,  ///< an error raised in another actor, boxed and shipped to us
    context_cancelled,   ///< the peer's task of a context was cancelled (RemoteActorError)
    stream_overrun,      ///< a send found the receiver's inbound ring (or spill) full
    end_of_channel,      ///< the stream ended (local close or the peer's Stop)
    closed_resource,     ///< use of a stream or resource that was closed (re-open, late use)
    invalid_operation,   ///< a call that is not allowed in this state (e.g. a self context)
    too_many_contexts,   ///< the actor runs max_endpoints endpoints already
    payload_too_large,   ///< a value does not fit the control record cap: stream it
    transport_closed,    ///< the link to the peer was closed
    peer_died,           ///< the peer process died (kernel evidence), a transport_closed
    timed_out,           ///< a call's deadline passed (Portal::run)
    not_exposed,         ///< the peer has no endpoint of that name
    lagged,              ///< a stream subscriber fell behind the fan-out buffer and lost messages
    peer_unresponsive,   ///< the peer showed no heartbeat for unresponsive_timeout, a
                         ///< transport_closed
    actor_failed,        ///< a child actor process failed to start, or ended on its own
    error_group,         ///< several errors raised together (an ActorNursery's children)
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

// `Name` is a class name: it cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define SHMCTX_DEFINE_ERROR(Name, code_value)                                     \
    class Name : public Error {                                                   \
    public:                                                                       \
        explicit Name(const std::string& what) : Error(Errc::code_value, what) {} \
    }
// NOLINTEND(bugprone-macro-parentheses)

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

/// Raised by MsgStream::receive() once the peer's Stop (after all its earlier data) or our own
/// close ended the stream; range-for ends on it without throwing. Also raised by send() after
/// the peer stopped (DESIGN.md §4.8).
SHMCTX_DEFINE_ERROR(EndOfChannel, end_of_channel);
/// Use of a resource after it was closed: a second open_stream() on a context (streams are
/// one-shot), receive() on a stream whose buffer the runtime closed (spec §3.10).
SHMCTX_DEFINE_ERROR(ClosedResourceError, closed_resource);
/// The actor already runs max_endpoints endpoints; the Start is refused with this, boxed.
SHMCTX_DEFINE_ERROR(TooManyContexts, too_many_contexts);
/// A call's deadline passed before its result arrived (Portal::run); the remote task was
/// cancelled.
SHMCTX_DEFINE_ERROR(TimedOut, timed_out);
/// The actor asked to run a function has no endpoint of that name (Actor::expose); the
/// parent sees it boxed in a RemoteActorError at open_context / run entry.
SHMCTX_DEFINE_ERROR(NotExposed, not_exposed);

#undef SHMCTX_DEFINE_ERROR

/// A call that is not allowed, e.g. opening a context with one's own actor (spec §6.15). The
/// text always starts with "Invalid Operation: ".
class InvalidOperation : public Error {
public:
    explicit InvalidOperation(const std::string& what);
};

/// A value too big for one control record (Start args, started() value, Return value; DESIGN.md
/// §3): stream it instead. Also a stream message over a quarter of the sender's data ring
/// (MsgStream::send). The text names the value, its size, the cap and what the cap is.
class PayloadTooLarge : public Error {
public:
    /// `what_value`: e.g. "Return value of endpoint 'fn'". `limit`: what the cap is, and what
    /// to do instead (the default is the control-record cap's).
    PayloadTooLarge(std::string_view what_value, std::size_t size_bytes, std::size_t cap_bytes,
                    std::string_view limit = kControlRecordLimit);
    static constexpr std::string_view kControlRecordLimit =
        "for one control record: stream it instead";
    std::size_t size_bytes() const noexcept { return size_bytes_; }
    std::size_t cap_bytes() const noexcept { return cap_bytes_; }

private:
    std::size_t size_bytes_;
    std::size_t cap_bytes_;
};

/// Raised once by Subscription::receive() (MsgStream::subscribe) when the subscriber fell more
/// than SubscribeOptions::capacity messages behind: the fan-out buffer overwrote `missed()`
/// messages it had not read. The next receive continues with the oldest message still buffered.
class Lagged : public Error {
public:
    explicit Lagged(std::uint64_t missed);
    /// How many messages this subscriber lost (never 0).
    std::uint64_t missed() const noexcept { return missed_; }

private:
    std::uint64_t missed_;
};

/// The link to a peer is gone: an orderly close by the peer, or (as PeerDied) its death. Every
/// context on that link fails with it; blocked calls wake with it (DESIGN.md §4.7).
class TransportClosed : public Error {
public:
    explicit TransportClosed(const std::string& what) : Error(Errc::transport_closed, what) {}

protected:
    TransportClosed(Errc code, const std::string& what) : Error(code, what) {}
};

/// The peer process died (decided on kernel evidence: its actor-file lock or pidfd).
class PeerDied : public TransportClosed {
public:
    explicit PeerDied(const std::string& what) : TransportClosed(Errc::peer_died, what) {}
};

/// The peer process is alive but showed no heartbeat for ActorOptions::unresponsive_timeout
/// (stopped, traced, starved): we gave up on it and closed the link. Never raised unless that
/// option is set; a stalled peer is otherwise only reported (DESIGN.md §2).
class PeerUnresponsive : public TransportClosed {
public:
    explicit PeerUnresponsive(const std::string& what)
        : TransportClosed(Errc::peer_unresponsive, what) {}
};

/// A child actor of an ActorNursery failed to start (its setup threw, it did not become ready
/// in time, its executable could not be spawned) or its process ended unclean before the
/// nursery asked it to (a crash, a signal, a non-zero exit). The text names the actor, its
/// executable, its pid and how it ended ("killed by signal 11 (SIGSEGV)").
class ActorFailed : public Error {
public:
    explicit ActorFailed(const std::string& what) : Error(Errc::actor_failed, what) {}
};

/// Several errors raised together: the failures of an ActorNursery's children (and of its body),
/// one per failed actor, in the order they happened (tractor's exception group). A single
/// failure is raised alone, never wrapped. Errors are not copied: errors() holds the originals.
class ErrorGroup : public Error {
public:
    /// `what`: the headline ("3 errors in the nursery of root@1a2b3c4d"); each error's what()
    /// is appended on its own line.
    ErrorGroup(const std::string& what, std::vector<std::exception_ptr> errors);
    const std::vector<std::exception_ptr>& errors() const noexcept { return errors_; }

private:
    std::vector<std::exception_ptr> errors_;
};

/// Which limit a StreamOverrun hit (DESIGN.md §4.9).
enum class OverrunLimit : std::uint8_t {
    messages,       ///< the receiver's inbound ring holds msg_buffer_size messages
    bytes,          ///< the receiver's inbound ring has no room for this record's bytes
    spill_cap,      ///< the sender's spill queue reached spill_cap_msgs or spill_cap_bytes
    block_timeout,  ///< on_full = block and StreamOptions::block_timeout expired
};
/// "messages", "bytes", "spill_cap", "block_timeout".
std::string_view to_string(OverrunLimit limit) noexcept;

/// Thrown by MsgStream::send() when the receiver's ring is full and it does not allow overruns
/// (on_full = raise), or when the spill cap or the block deadline is reached (DESIGN.md §4.2).
/// The message was not enqueued. Escaping an endpoint it reaches the parent as a
/// RemoteActorError whose boxed_is<StreamOverrun>() is true, never as a StreamOverrun (spec §3.8).
class StreamOverrun : public Error {
public:
    /// `detail` (optional) adds figures, e.g. "ring holds 64 messages".
    StreamOverrun(Uid sender, Uid receiver, Cid cid, OverrunLimit limit,
                  std::string_view detail = {});
    /// The actor whose send overran (us, when thrown by send()).
    const Uid& sender() const noexcept { return data_->sender; }
    const Uid& receiver() const noexcept { return data_->receiver; }
    const Cid& cid() const noexcept { return data_->cid; }
    OverrunLimit limit() const noexcept { return data_->limit; }

private:
    struct Data {
        Uid sender;
        Uid receiver;
        Cid cid;
        OverrunLimit limit = OverrunLimit::messages;
    };
    // Shared so copying the exception (std::exception_ptr, rethrow) never allocates or throws.
    std::shared_ptr<const Data> data_;
};

/// The fields of a boxed error as an Error record carries them (spec §3.8; wire table Error).
/// Plain aggregate: value type.
struct RemoteErrorInfo {
    Uid src_uid;                   ///< actor where the error was raised (kept over relays)
    std::string boxed_type;        ///< type name as the last hop shipped it
    std::string src_type;          ///< type name at the source
    std::vector<Uid> relay_path;   ///< actors it passed through, oldest first
    std::string message;           ///< the source exception's what()
    std::string traceback;         ///< where it was raised and how it travelled (human text)
    std::optional<Cid> cid;        ///< the context it arrived on
    std::optional<Uid> canceller;  ///< ContextCancelled: who requested the cancel
    std::optional<Uid> sender;     ///< a boxed StreamOverrun: the actor whose sends overran
};

/// An error raised in another actor, unboxed from an Error record (spec §3.8). A local
/// RemoteActorError re-raised by an endpoint is relayed to its parent as an "inception":
/// `boxed_type_name()` becomes "RemoteActorError" while `src_uid()`/`src_type_name()` keep the
/// origin over every hop (spec §6.17). Type names resolve to C++ types through the registry
/// below; an unknown name resolves to no type and stays available as text.
/// Thread-safety: immutable; copies share the fields (copying never throws).
class RemoteActorError : public Error {
public:
    explicit RemoteActorError(RemoteErrorInfo info);

    const RemoteErrorInfo& info() const noexcept { return *info_; }
    const Uid& src_uid() const noexcept { return info_->src_uid; }
    /// The type name the last hop shipped ("RemoteActorError" for a relayed error).
    const std::string& boxed_type_name() const noexcept { return info_->boxed_type; }
    /// The type name where the error was raised.
    const std::string& src_type_name() const noexcept { return info_->src_type; }
    /// The registered C++ type of boxed_type_name(), or nullptr for an unknown name.
    const std::type_info* boxed_type() const;
    /// The registered C++ type of src_type_name(), or nullptr for an unknown name.
    const std::type_info* src_type() const;
    /// Exactly T (not a base of it): `e.boxed_is<StreamOverrun>()`.
    template <class T>
    bool boxed_is() const {
        const std::type_info* t = boxed_type();
        return t != nullptr && *t == typeid(T);
    }
    template <class T>
    bool src_is() const {
        const std::type_info* t = src_type();
        return t != nullptr && *t == typeid(T);
    }
    const std::vector<Uid>& relay_path() const noexcept { return info_->relay_path; }
    /// The last hop of relay_path(): the actor that sent it to us. src_uid() for an error that
    /// has no path (one built locally, never shipped).
    const Uid& relay_uid() const noexcept {
        return info_->relay_path.empty() ? info_->src_uid : info_->relay_path.back();
    }
    const std::string& message() const noexcept { return info_->message; }
    const std::string& traceback() const noexcept { return info_->traceback; }
    const std::optional<Cid>& cid() const noexcept { return info_->cid; }
    const std::optional<Uid>& canceller() const noexcept { return info_->canceller; }
    const std::optional<Uid>& sender() const noexcept { return info_->sender; }
    /// A multi-hop error: the type shipped by the last hop is not the type at the source.
    bool is_inception() const noexcept { return info_->boxed_type != info_->src_type; }

protected:
    RemoteActorError(Errc code, std::shared_ptr<const RemoteErrorInfo> info);

private:
    std::shared_ptr<const RemoteErrorInfo> info_;
};

/// The peer's task of a context was cancelled (spec §3.2). canceller() is the actor that
/// requested the cancellation; it decides whether the receiving side absorbs or raises it
/// (spec §3.3). A relayed ContextCancelled keeps its canceller and names the relayer as
/// src_uid (DESIGN.md §4.9).
/// Thread-safety: immutable; copies share the fields.
class ContextCancelled : public RemoteActorError {
public:
    /// `info.canceller` unset (a peer that did not say) counts as cancelled by its source:
    /// canceller() is then src_uid, so the error is raised, never absorbed.
    explicit ContextCancelled(RemoteErrorInfo info);
    /// Always set (hides RemoteActorError::canceller(), which is optional).
    const Uid& canceller() const noexcept { return *info().canceller; }
};

// --- error-type registry: C++ exception type <-> stable wire name ---

namespace detail {
void register_error_type_impl(const std::type_info& type, std::string_view name);
/// The C++ name of `type` ("app::ParseError"), for texts.
std::string demangled_type_name(const std::type_info& type);
}  // namespace detail

/// Registers T's wire name (the boxed_type/src_type text of Error records). Thread-safe and
/// idempotent; registering T under a second name, or a name already taken by another type,
/// throws std::invalid_argument (wire names are stable: a peer resolves them). Names are 1-128
/// printable ASCII characters. Pre-registered: std::exception and its standard subclasses as
/// "std::runtime_error", ... and every shmctx error under its class name ("RemoteActorError",
/// "ContextCancelled", "StreamOverrun", ...).
template <class T>
void register_error_type(std::string_view name) {
    static_assert(std::is_base_of_v<std::exception, T>,
                  "only std::exception types can be boxed by name");
    detail::register_error_type_impl(typeid(T), name);
}

/// The registered type of `name`, or nullptr ("no type"). Thread-safe.
const std::type_info* find_error_type(std::string_view name);

/// The wire name of `type`: the registered name of `type` or, if it has none, of its nearest
/// registered public base (breadth first over the Itanium ABI base list), so an unregistered
/// `app::ParseError : std::runtime_error` ships as "std::runtime_error". A type with no
/// registered ancestor (not a std::exception) gets its demangled C++ name, made distinct from
/// every registered name so a peer never resolves it to a wrong type. Thread-safe.
std::string error_type_name(const std::type_info& type);

/// The wire name of e's dynamic (most-derived) type, as above.
inline std::string error_type_name(const std::exception& e) { return error_type_name(typeid(e)); }

template <class T>
std::string error_type_name() {
    return error_type_name(typeid(T));
}

/// Thrown at a cancellation checkpoint when an enclosing cancel scope was cancelled
/// (DESIGN.md §4.6). Deliberately NOT derived from std::exception, so that
/// `catch (const std::exception&)` cannot swallow it; level-triggered: every later checkpoint
/// in a cancelled scope throws again. Catch it only to clean up, then rethrow.
struct Cancelled {
    /// Why, for logs ("cancelled by parent@1a2b3c4d").
    const char* what() const noexcept { return "shmctx::Cancelled"; }
};

}  // namespace shmctx
