// Control message encoding and verified decoding (see include/shmctx/wire/codec.hpp).
#include "shmctx/wire/codec.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace shmctx::wire {

static_assert(static_cast<std::uint8_t>(fb::PayloadKind::empty) ==
              static_cast<std::uint8_t>(PayloadKind::empty));
static_assert(static_cast<std::uint8_t>(fb::PayloadKind::bytes) ==
              static_cast<std::uint8_t>(PayloadKind::bytes));
static_assert(static_cast<std::uint8_t>(fb::PayloadKind::string) ==
              static_cast<std::uint8_t>(PayloadKind::string));
static_assert(static_cast<std::uint8_t>(fb::PayloadKind::value) ==
              static_cast<std::uint8_t>(PayloadKind::value));
static_assert(static_cast<std::uint8_t>(fb::PayloadKind::flatbuffer) ==
              static_cast<std::uint8_t>(PayloadKind::flatbuffer));
static_assert(static_cast<std::uint8_t>(fb::PayloadKind::MAX) == kMaxPayloadKind);
static_assert(sizeof(fb::Uuid) == sizeof(Uuid::bytes));
static_assert(sizeof(fb::Cid) == 24 && alignof(fb::Cid) == 8);

// --- conversions ---

fb::Uuid to_fb(const Uuid& u) noexcept {
    return fb::Uuid(flatbuffers::span<const std::uint8_t, 16>(u.bytes.data(), 16));
}

Uuid from_fb(const fb::Uuid& u) noexcept {
    Uuid out;
    std::memcpy(out.bytes.data(), u.bytes()->Data(), out.bytes.size());
    return out;
}

fb::Cid to_fb(const Cid& c) noexcept { return fb::Cid(to_fb(c.opener), c.seq); }

Cid from_fb(const fb::Cid& c) noexcept { return Cid{from_fb(c.opener()), c.seq()}; }

UidRef from_fb(const fb::Uid& u) noexcept {
    // Both fields are required (present after verification); the guards keep this total.
    const flatbuffers::String* name = u.name();
    const fb::Uuid* uuid = u.uuid();
    return UidRef{name == nullptr ? std::string_view() : name->string_view(),
                  uuid == nullptr ? Uuid{} : from_fb(*uuid)};
}

PayloadView from_fb(const fb::Value* v) noexcept {
    if (v == nullptr) {
        return {};
    }
    const auto* data = v->data();
    const std::span<const std::byte> bytes =
        data == nullptr ? std::span<const std::byte>()
                        : std::span(reinterpret_cast<const std::byte*>(data->data()), data->size());
    return {static_cast<PayloadKind>(v->kind()), bytes};
}

// --- encoding ---

ControlEncoder::ControlEncoder(std::size_t max_record_bytes, std::size_t initial_bytes)
    : max_record_bytes_(max_record_bytes), fbb_(initial_bytes) {
    // Scalars are written even when equal to the schema default: a reader never has to know
    // which default the writer's schema version had.
    fbb_.ForceDefaults(true);
    // A control record's tables all differ in shape: the search for an identical earlier vtable
    // never finds one and cost a quarter of the encoding.
    fbb_.DedupVtables(false);
}

flatbuffers::Offset<fb::Uid> ControlEncoder::uid(const UidRef& u) {
    const auto name = fbb_.CreateString(u.name.data(), u.name.size());
    const fb::Uuid uuid = to_fb(u.uuid);
    return fb::CreateUid(fbb_, name, &uuid);
}

flatbuffers::Offset<fb::Value> ControlEncoder::value(PayloadView v) {
    flatbuffers::Offset<flatbuffers::Vector<std::uint8_t>> data;
    if (!v.bytes().empty()) {
        // 8-byte aligned within the buffer, so a nested FlatBuffer can be read in place.
        fbb_.ForceVectorAlignment(v.size_bytes(), 1, kPayloadAlign);
        data = fbb_.CreateVector(reinterpret_cast<const std::uint8_t*>(v.bytes().data()),
                                 v.size_bytes());
    }
    return fb::CreateValue(fbb_, static_cast<fb::PayloadKind>(v.kind()), data);
}

flatbuffers::Offset<fb::ContextOptions> ControlEncoder::options(const ContextSettings& s) {
    return fb::CreateContextOptions(fbb_, s.msg_buffer_size, s.allow_overruns);
}

std::span<const std::byte> ControlEncoder::finish(fb::ControlBody type,
                                                  flatbuffers::Offset<void> body) {
    const auto root = fb::CreateControlMessage(fbb_, type, body);
    // Pads the finished buffer to a multiple of 8, so it starts 8-byte aligned in the builder
    // (whose storage end is 8-aligned) and every record copied into a ring stays 8-aligned.
    fbb_.TrackMinAlign(kPayloadAlign);
    fbb_.Finish(root, fb::ControlMessageIdentifier());
    return {reinterpret_cast<const std::byte*>(fbb_.GetBufferPointer()), fbb_.GetSize()};
}

std::span<const std::byte> ControlEncoder::start(const StartFields& f) {
    fbb_.Clear();
    const auto fn = fbb_.CreateString(f.fn_name.data(), f.fn_name.size());
    const auto args = value(f.args);
    const auto opts = options(f.options);
    const fb::Cid cid = to_fb(f.cid);
    return finish(fb::ControlBody::Start, fb::CreateStart(fbb_, &cid, fn, args, opts).Union());
}

std::span<const std::byte> ControlEncoder::start_ack(const Cid& cid,
                                                     const ContextSettings& settings) {
    fbb_.Clear();
    const auto opts = options(settings);
    const fb::Cid c = to_fb(cid);
    return finish(fb::ControlBody::StartAck, fb::CreateStartAck(fbb_, &c, opts).Union());
}

std::span<const std::byte> ControlEncoder::started(const Cid& cid, PayloadView v) {
    fbb_.Clear();
    const auto val = value(v);
    const fb::Cid c = to_fb(cid);
    return finish(fb::ControlBody::Started, fb::CreateStarted(fbb_, &c, val).Union());
}

std::span<const std::byte> ControlEncoder::stop(const Cid& cid, std::uint64_t data_seq) {
    fbb_.Clear();
    const fb::Cid c = to_fb(cid);
    return finish(fb::ControlBody::Stop, fb::CreateStop(fbb_, &c, data_seq).Union());
}

std::span<const std::byte> ControlEncoder::return_value(const Cid& cid, std::uint64_t data_seq,
                                                        PayloadView v) {
    fbb_.Clear();
    const auto val = value(v);
    const fb::Cid c = to_fb(cid);
    return finish(fb::ControlBody::Return, fb::CreateReturn(fbb_, &c, data_seq, val).Union());
}

std::span<const std::byte> ControlEncoder::encode_error(const ErrorFields& f,
                                                        std::string_view message_text,
                                                        std::string_view traceback_text) {
    fbb_.Clear();
    const auto src = uid(f.src_uid);
    const auto boxed = fbb_.CreateString(f.boxed_type.data(), f.boxed_type.size());
    const auto src_type = fbb_.CreateString(f.src_type.data(), f.src_type.size());
    flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::Uid>>> path;
    if (!f.relay_path.empty()) {
        std::vector<flatbuffers::Offset<fb::Uid>> hops;
        hops.reserve(f.relay_path.size());
        for (const UidRef& hop : f.relay_path) {
            hops.push_back(uid(hop));
        }
        path = fbb_.CreateVector(hops);
    }
    const auto message = fbb_.CreateString(message_text.data(), message_text.size());
    const auto traceback = fbb_.CreateString(traceback_text.data(), traceback_text.size());
    flatbuffers::Offset<fb::Uid> canceller;
    if (f.canceller) {
        canceller = uid(*f.canceller);
    }
    const auto sender = uid(f.sender);
    const fb::Cid c = to_fb(f.cid);
    return finish(fb::ControlBody::Error,
                  fb::CreateError(fbb_, &c, f.data_seq, src, boxed, src_type, path, message,
                                  traceback, canceller, sender)
                      .Union());
}

namespace {

// The first `keep` bytes of `text` (backed off to a UTF-8 boundary) plus a marker saying how
// much was dropped. Returns the bytes kept.
std::size_t truncate_into(std::string& out, std::string_view text, std::string_view what,
                          std::size_t keep) {
    keep = std::min(keep, text.size());
    // Never split a multi-byte sequence: back off over continuation bytes (10xxxxxx).
    while (keep > 0 && keep < text.size() &&
           (static_cast<unsigned char>(text[keep]) & 0xC0U) == 0x80U) {
        --keep;
    }
    out.assign(text.substr(0, keep));
    out += "\n[... ";
    out += what;
    out += " truncated: ";
    out += std::to_string(text.size() - keep);
    out += " bytes dropped]";
    return keep;
}

}  // namespace

std::span<const std::byte> ControlEncoder::error(const ErrorFields& f) {
    std::span<const std::byte> buf = encode_error(f, f.message, f.traceback);
    // Shed the excess from the traceback first, then from the message; every round re-encodes
    // and re-measures, so string padding and markers need no exact accounting. Two rounds
    // suffice (one per string); the bound only guards against a logic slip.
    constexpr std::size_t kMarkerBytes = 64;  // a marker is < 64 bytes
    constexpr std::size_t kSlack = 16;        // string length/NUL/padding, 8-byte end padding
    std::string_view message = f.message;
    std::string_view traceback = f.traceback;
    std::size_t traceback_keep = f.traceback.size();
    std::size_t message_keep = f.message.size();
    for (int round = 0; round < 4 && buf.size() > max_record_bytes_; ++round) {
        const std::size_t drop = buf.size() - max_record_bytes_ + kMarkerBytes + kSlack;
        if (traceback_keep > 0) {
            traceback_keep = traceback_keep > drop ? traceback_keep - drop : 0;
            traceback_keep = truncate_into(truncated_[1], f.traceback, "traceback", traceback_keep);
            traceback = truncated_[1];
        } else if (message_keep > 0) {
            message_keep = message_keep > drop ? message_keep - drop : 0;
            message_keep = truncate_into(truncated_[0], f.message, "message", message_keep);
            message = truncated_[0];
        } else {
            // Only pathological names or relay paths remain: returned whole; the caller
            // compares with max_record_bytes() as for any other message.
            break;
        }
        buf = encode_error(f, message, traceback);
    }
    return buf;
}

std::span<const std::byte> ControlEncoder::cancel_context(std::uint64_t request_id,
                                                          const UidRef& requester,
                                                          const Cid& target) {
    fbb_.Clear();
    const auto who = uid(requester);
    const fb::Cid c = to_fb(target);
    const auto t = fb::CreateContextTarget(fbb_, &c);
    return finish(
        fb::ControlBody::CancelRequest,
        fb::CreateCancelRequest(fbb_, request_id, who, fb::CancelTarget::ContextTarget, t.Union())
            .Union());
}

std::span<const std::byte> ControlEncoder::cancel_actor(std::uint64_t request_id,
                                                        const UidRef& requester) {
    fbb_.Clear();
    const auto who = uid(requester);
    const auto t = fb::CreateActorTarget(fbb_);
    return finish(
        fb::ControlBody::CancelRequest,
        fb::CreateCancelRequest(fbb_, request_id, who, fb::CancelTarget::ActorTarget, t.Union())
            .Union());
}

std::span<const std::byte> ControlEncoder::cancel_ack(std::uint64_t request_id, bool found) {
    fbb_.Clear();
    return finish(fb::ControlBody::CancelAck, fb::CreateCancelAck(fbb_, request_id, found).Union());
}

std::span<const std::byte> ControlEncoder::stream_open(const StreamOpenFields& f) {
    fbb_.Clear();
    const fb::Cid c = to_fb(f.cid);
    return finish(fb::ControlBody::StreamOpen,
                  fb::CreateStreamOpen(fbb_, &c, f.offset, f.size_bytes, f.generation).Union());
}

std::span<const std::byte> ControlEncoder::link_open(const UidRef& sender,
                                                     std::uint32_t layout_version,
                                                     std::uint32_t protocol_version) {
    fbb_.Clear();
    const auto who = uid(sender);
    return finish(fb::ControlBody::LinkOpen,
                  fb::CreateLinkOpen(fbb_, layout_version, protocol_version, who).Union());
}

std::span<const std::byte> ControlEncoder::link_close(fb::LinkCloseReason reason,
                                                      std::string_view detail,
                                                      std::uint32_t layout_version,
                                                      std::uint32_t protocol_version) {
    fbb_.Clear();
    const auto text = fbb_.CreateString(detail.data(), detail.size());
    return finish(
        fb::ControlBody::LinkClose,
        fb::CreateLinkClose(fbb_, reason, layout_version, protocol_version, text).Union());
}

std::span<const std::byte> ControlEncoder::heartbeat(std::uint64_t counter,
                                                     std::uint64_t monotonic_ns) {
    fbb_.Clear();
    return finish(fb::ControlBody::Heartbeat,
                  fb::CreateHeartbeat(fbb_, counter, monotonic_ns).Union());
}

// --- decoding ---

std::string_view ControlView::type_name() const noexcept { return fb::EnumNameControlBody(type()); }

namespace {

// A control message nests at most ControlMessage > Error > relay_path > Uid > name (5 levels);
// 16 leaves room for appended fields. 4096 tables bounds the relay path far above any real
// chain while capping the verifier's work on a hostile record.
flatbuffers::Verifier::Options control_verifier_options() noexcept {
    flatbuffers::Verifier::Options o;
    o.max_depth = 16;
    o.max_tables = 4096;
    o.check_alignment = true;
    o.check_nested_flatbuffers = false;  // payloads are verified by whoever reads them as T
    return o;
}

// Semantic checks FlatBuffers cannot express. `size` only feeds the error text.
class Checker {
public:
    explicit Checker(std::size_t size) : size_(size) {}

    [[noreturn]] void fail(std::string_view what) const {
        throw DecodeError("control record (" + std::to_string(size_) +
                          " bytes): " + std::string(what));
    }
    void cid(const fb::Cid* c, std::string_view field) const {
        // Required fields are present after verification; the null check guards optional use.
        if (c == nullptr || c->seq() == 0) {
            fail(std::string(field) + " is a nil context id");
        }
    }
    void uid(const fb::Uid* u, std::string_view field) const {
        if (u != nullptr && from_fb(*u).uuid.is_nil()) {
            fail(std::string(field) + " has a nil uuid");
        }
    }
    void value(const fb::Value* v, std::string_view field) const {
        if (v == nullptr) {
            return;
        }
        const auto kind = static_cast<std::uint8_t>(v->kind());
        if (kind > kMaxPayloadKind) {
            fail(std::string(field) + " has unknown payload kind " + std::to_string(kind));
        }
        if (v->kind() == fb::PayloadKind::empty && v->data() != nullptr && v->data()->size() != 0) {
            fail(std::string(field) + " is empty but carries " + std::to_string(v->data()->size()) +
                 " bytes");
        }
    }

private:
    std::size_t size_;
};

// Reads the union type once and casts the body pointer it already has: body_as_X() would
// re-read the type byte (a second fetch of shared memory) and return nullptr on a mismatch.
template <class T>
const T& body(const void* p) {
    return *static_cast<const T*>(p);
}

void check_semantics(fb::ControlBody type, const void* p, const Checker& c) {
    if (type == fb::ControlBody::NONE) {
        c.fail("message has no body");
    }
    if (p == nullptr) {  // required: the Verifier already refused this; kept for the reader
        c.fail("message body is missing");
    }
    switch (type) {
        case fb::ControlBody::Start: {
            const auto& m = body<fb::Start>(p);
            c.cid(m.cid(), "Start.cid");
            c.value(m.args(), "Start.args");
            return;
        }
        case fb::ControlBody::StartAck:
            c.cid(body<fb::StartAck>(p).cid(), "StartAck.cid");
            return;
        case fb::ControlBody::Started: {
            const auto& m = body<fb::Started>(p);
            c.cid(m.cid(), "Started.cid");
            c.value(m.value(), "Started.value");
            return;
        }
        case fb::ControlBody::Stop:
            c.cid(body<fb::Stop>(p).cid(), "Stop.cid");
            return;
        case fb::ControlBody::Return: {
            const auto& m = body<fb::Return>(p);
            c.cid(m.cid(), "Return.cid");
            c.value(m.value(), "Return.value");
            return;
        }
        case fb::ControlBody::Error: {
            const auto& m = body<fb::Error>(p);
            c.cid(m.cid(), "Error.cid");
            c.uid(m.src_uid(), "Error.src_uid");
            c.uid(m.canceller(), "Error.canceller");
            c.uid(m.sender(), "Error.sender");
            if (const auto* path = m.relay_path(); path != nullptr) {
                for (const fb::Uid* hop : *path) {
                    c.uid(hop, "Error.relay_path");
                }
            }
            return;
        }
        case fb::ControlBody::CancelRequest: {
            const auto& m = body<fb::CancelRequest>(p);
            c.uid(m.requester(), "CancelRequest.requester");
            if (m.request_id() == 0) {
                c.fail("CancelRequest.request_id is 0");
            }
            const fb::CancelTarget target = m.target_type();
            const void* t = m.target();
            if (t == nullptr) {
                c.fail("CancelRequest.target is missing");
            }
            switch (target) {
                case fb::CancelTarget::ContextTarget:
                    c.cid(body<fb::ContextTarget>(t).cid(), "CancelRequest.target.cid");
                    return;
                case fb::CancelTarget::ActorTarget:
                    return;
                default:
                    c.fail("CancelRequest.target has unknown type " +
                           std::to_string(static_cast<unsigned>(target)));
            }
        }
        case fb::ControlBody::CancelAck:
            return;
        case fb::ControlBody::StreamOpen: {
            const auto& m = body<fb::StreamOpen>(p);
            c.cid(m.cid(), "StreamOpen.cid");
            if (m.size_bytes() == 0) {
                c.fail("StreamOpen.size_bytes is 0");
            }
            return;
        }
        case fb::ControlBody::LinkOpen:
            c.uid(body<fb::LinkOpen>(p).sender(), "LinkOpen.sender");
            return;
        case fb::ControlBody::LinkClose: {
            const auto reason = body<fb::LinkClose>(p).reason();
            if (static_cast<std::uint8_t>(reason) >
                static_cast<std::uint8_t>(fb::LinkCloseReason::MAX)) {
                c.fail("LinkClose.reason " + std::to_string(static_cast<unsigned>(reason)) +
                       " is unknown");
            }
            return;
        }
        case fb::ControlBody::Heartbeat:
            return;
        case fb::ControlBody::NONE:
            break;  // refused above
    }
    // A member added by a newer schema: new message types bump the protocol version, so a peer
    // that passed link negotiation never sends one.
    c.fail("unknown message type " + std::to_string(static_cast<unsigned>(type)));
}

}  // namespace

ControlView decode_control(std::span<const std::byte> record) {
    const Checker checker(record.size());
    try {
        detail::check_flatbuffer_frame(record, fb::ControlMessageIdentifier());
    } catch (const DecodeError& e) {
        checker.fail(e.what());
    }
    const auto* data = reinterpret_cast<const std::uint8_t*>(record.data());
    flatbuffers::Verifier verifier(data, record.size(), control_verifier_options());
    if (!fb::VerifyControlMessageBuffer(verifier)) {
        checker.fail(
            "failed FlatBuffers verification (offset or length out of bounds, misaligned field, "
            "missing required field, or nesting too deep)");
    }
    const fb::ControlMessage* msg = fb::GetControlMessage(data);
    const fb::ControlBody type = msg->body_type();  // read once: the view keeps these
    const void* body = msg->body();
    check_semantics(type, body, checker);
    return ControlView(msg, type, body);
}

}  // namespace shmctx::wire
