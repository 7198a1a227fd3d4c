// Control-ring messages: encode into a reused FlatBufferBuilder, decode with verification.
// Schema: schemas/shmctx.fbs (generated types in shmctx::wire::fb); catalogue, trust boundary and
// size caps in docs/protocol.md ("Wire").
//
// Framing: one control record = one ControlMessage FlatBuffer with file identifier "SHMC", NOT
// size-prefixed: the ring's record header already carries the exact length, so a prefix would
// be a second length to keep consistent. Encoded buffers are a multiple of 8 bytes long and
// start 8-byte aligned; nested payload bytes (Value.data) are 8-byte aligned within them.
//
// Trust boundary: decode_control() is the only way to read a control record. It verifies the
// buffer (bounds, alignment, depth/table limits, required fields, file identifier) and the
// semantics FlatBuffers cannot express (known union member, known payload kind, non-nil ids),
// then hands out a view; anything else is DecodeError, never a crash.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "shmctx/ids.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/layout.hpp"
#include "shmctx/shmctx_generated.h"
#include "shmctx/uuid.hpp"

SHMCTX_ROOT_TYPE(shmctx::wire::fb::ControlMessage, "SHMC");

namespace shmctx::wire {

/// Cap on one control record (DESIGN.md §3): ControlEncoder::error() truncates tracebacks with
/// a marker to fit; a bigger Start/Started/Return value is PayloadTooLarge, raised by core.
inline constexpr std::size_t kDefaultMaxControlRecordBytes = 16 * 1024;

/// Context id: the public shmctx::Cid (include/shmctx/ids.hpp), named here for the wire code.
using Cid = shmctx::Cid;

/// An actor identity as read from or written to the wire; `name` views the buffer or the
/// caller's string. Thread-safety: value type.
struct UidRef {
    std::string_view name;
    Uuid uuid;
};

/// Receiver-side context settings carried in Start and StartAck (DESIGN.md §4.1, §4.2).
/// Plain aggregates below: value types, views only (no ownership).
struct ContextSettings {
    std::uint32_t msg_buffer_size = 64;
    bool allow_overruns = false;
};

struct StartFields {
    Cid cid;
    std::string_view fn_name;
    PayloadView args;
    ContextSettings options;
};

struct ErrorFields {
    Cid cid;
    std::uint64_t data_seq = 0;
    UidRef src_uid;
    std::string_view boxed_type;
    std::string_view src_type;
    std::span<const UidRef> relay_path;  // oldest hop first
    std::string_view message;
    std::string_view traceback;
    std::optional<UidRef> canceller;
    UidRef sender;
};

struct StreamOpenFields {
    Cid cid;
    std::uint64_t offset = 0;  // of the ring header in the producer's arena
    std::uint64_t size_bytes = 0;
    std::uint64_t generation = 0;
};

/// Builds control messages into one reused FlatBufferBuilder (cleared per message, so after
/// warm-up encoding does not allocate). Each call returns the finished buffer, valid until the
/// next call on this encoder or its destruction.
///
/// Size cap: error() truncates the traceback, then the message, so the record fits
/// `max_record_bytes` (marker "\n[... traceback truncated: N bytes dropped]", cut on a UTF-8
/// boundary); other messages are returned whole and the caller compares their size with
/// max_record_bytes() (a too-big Start/Started/Return value is PayloadTooLarge in core).
/// Thread-safety: single thread (one encoder per producer; core serialises a link's producers).
class ControlEncoder {
public:
    explicit ControlEncoder(std::size_t max_record_bytes = kDefaultMaxControlRecordBytes,
                            std::size_t initial_bytes = 1024);

    std::size_t max_record_bytes() const noexcept { return max_record_bytes_; }

    std::span<const std::byte> start(const StartFields& f);
    std::span<const std::byte> start_ack(const Cid& cid, const ContextSettings& options);
    std::span<const std::byte> started(const Cid& cid, PayloadView value);
    std::span<const std::byte> stop(const Cid& cid, std::uint64_t data_seq);
    std::span<const std::byte> return_value(const Cid& cid, std::uint64_t data_seq,
                                            PayloadView value);
    std::span<const std::byte> error(const ErrorFields& f);
    /// CancelRequest targeting one context of the receiver.
    std::span<const std::byte> cancel_context(std::uint64_t request_id, const UidRef& requester,
                                              const Cid& target);
    /// CancelRequest targeting the whole receiving actor (the actor-cancel request).
    std::span<const std::byte> cancel_actor(std::uint64_t request_id, const UidRef& requester);
    std::span<const std::byte> cancel_ack(std::uint64_t request_id, bool found);
    std::span<const std::byte> stream_open(const StreamOpenFields& f);
    std::span<const std::byte> link_open(const UidRef& sender,
                                         std::uint32_t layout_version = shm::kLayoutVersion,
                                         std::uint32_t protocol_version = shm::kProtocolVersion);
    std::span<const std::byte> link_close(fb::LinkCloseReason reason, std::string_view detail,
                                          std::uint32_t layout_version = shm::kLayoutVersion,
                                          std::uint32_t protocol_version = shm::kProtocolVersion);
    std::span<const std::byte> heartbeat(std::uint64_t counter, std::uint64_t monotonic_ns);

    /// The builder, for tests and benchmarks that inspect the last message.
    const flatbuffers::FlatBufferBuilder& builder() const noexcept { return fbb_; }

private:
    std::span<const std::byte> finish(fb::ControlBody type, flatbuffers::Offset<void> body);
    flatbuffers::Offset<fb::Uid> uid(const UidRef& u);
    flatbuffers::Offset<fb::Value> value(PayloadView v);
    flatbuffers::Offset<fb::ContextOptions> options(const ContextSettings& s);
    std::span<const std::byte> encode_error(const ErrorFields& f, std::string_view message,
                                            std::string_view traceback);

    std::size_t max_record_bytes_;
    flatbuffers::FlatBufferBuilder fbb_;
    std::string truncated_[2];  // message and traceback after truncation (reused)
};

/// A verified control message; views point into the decoded buffer and live as long as it.
/// The union type and body offset are read once, at decode time (no second fetch of a byte
/// a peer could change); fields are read through the generated accessors, which stay within
/// the verified bounds.
/// Thread-safety: value type.
class ControlView {
public:
    fb::ControlBody type() const noexcept { return type_; }
    /// "Start", "Error", ...
    std::string_view type_name() const noexcept;
    const fb::ControlMessage& message() const noexcept { return *msg_; }

    /// The body as T (fb::Start, fb::Error, ...), or nullptr when the message is another type.
    template <class T>
    const T* as() const noexcept {
        return type_ == fb::ControlBodyTraits<T>::enum_value ? static_cast<const T*>(body_)
                                                             : nullptr;
    }

private:
    // Only decode_control() makes views: a view always stands for a verified record.
    friend ControlView decode_control(std::span<const std::byte> record);
    ControlView(const fb::ControlMessage* msg, fb::ControlBody type, const void* body) noexcept
        : msg_(msg), type_(type), body_(body) {}

    const fb::ControlMessage* msg_;
    fb::ControlBody type_;
    const void* body_;
};

/// Verifies `record` (8-byte aligned, as the ring delivers it) and returns its view; throws
/// DecodeError with the reason (size, identifier, verifier, unknown type or kind, nil id).
ControlView decode_control(std::span<const std::byte> record);

// --- conversions between generated and library types ---

fb::Uuid to_fb(const Uuid& u) noexcept;
Uuid from_fb(const fb::Uuid& u) noexcept;
fb::Cid to_fb(const Cid& c) noexcept;
Cid from_fb(const fb::Cid& c) noexcept;
/// A verified fb::Uid (name and uuid are required fields, so both are present).
UidRef from_fb(const fb::Uid& u) noexcept;
/// A verified Value, or the empty payload for nullptr. Kind validated by decode_control().
PayloadView from_fb(const fb::Value* v) noexcept;

}  // namespace shmctx::wire
