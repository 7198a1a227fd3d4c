// Field walk and encode/decode round trip of verified control messages (fuzz_support.hpp).
#include "fuzz_support.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace shmctx::fuzz {

namespace fb = wire::fb;

namespace {

std::uint64_t fold(const wire::UidRef& u) noexcept {
    return touch(u.name) ^ touch(std::as_bytes(std::span(u.uuid.bytes)));
}
std::uint64_t fold(const wire::Cid& c) noexcept {
    return touch(std::as_bytes(std::span(c.opener.bytes))) ^ c.seq;
}
std::uint64_t fold(PayloadView v) noexcept {
    return touch(v.bytes()) + static_cast<std::uint64_t>(v.kind());
}
std::uint64_t fold(const fb::Uid* u) noexcept { return u == nullptr ? 0 : fold(wire::from_fb(*u)); }
std::uint64_t fold(const fb::Cid* c) noexcept { return c == nullptr ? 0 : fold(wire::from_fb(*c)); }
std::uint64_t fold(const flatbuffers::String* s) noexcept {
    return s == nullptr ? 0 : touch(s->string_view());
}
std::uint64_t fold(const fb::ContextOptions* o) noexcept {
    return o == nullptr ? 0 : o->msg_buffer_size() + (o->allow_overruns() ? 1U : 0U);
}

wire::ContextSettings settings(const fb::ContextOptions* o) noexcept {
    return o == nullptr ? wire::ContextSettings{}
                        : wire::ContextSettings{o->msg_buffer_size(), o->allow_overruns()};
}
bool same(const wire::ContextSettings& a, const wire::ContextSettings& b) noexcept {
    return a.msg_buffer_size == b.msg_buffer_size && a.allow_overruns == b.allow_overruns;
}
bool same(const wire::UidRef& a, const wire::UidRef& b) noexcept {
    return a.name == b.name && a.uuid == b.uuid;
}
bool same(PayloadView a, PayloadView b) noexcept {
    return a.kind() == b.kind() && std::ranges::equal(a.bytes(), b.bytes());
}
std::string_view text(const flatbuffers::String* s) noexcept {
    return s == nullptr ? std::string_view() : s->string_view();
}

// The fields of an Error, with the relay path owned here.
struct ErrorCopy {
    wire::ErrorFields fields;
    std::vector<wire::UidRef> path;
};
ErrorCopy error_fields(const fb::Error& m) {
    ErrorCopy e;
    e.fields.cid = wire::from_fb(*m.cid());
    e.fields.data_seq = m.data_seq();
    e.fields.src_uid = wire::from_fb(*m.src_uid());
    e.fields.boxed_type = text(m.boxed_type());
    e.fields.src_type = text(m.src_type());
    if (const auto* p = m.relay_path(); p != nullptr) {
        for (const fb::Uid* hop : *p) e.path.push_back(wire::from_fb(*hop));
    }
    e.fields.relay_path = e.path;
    e.fields.message = text(m.message());
    e.fields.traceback = text(m.traceback());
    if (m.canceller() != nullptr) e.fields.canceller = wire::from_fb(*m.canceller());
    e.fields.sender = wire::from_fb(*m.sender());
    return e;
}
bool same(const wire::ErrorFields& a, const wire::ErrorFields& b) noexcept {
    return a.cid == b.cid && a.data_seq == b.data_seq && same(a.src_uid, b.src_uid) &&
           a.boxed_type == b.boxed_type && a.src_type == b.src_type &&
           std::ranges::equal(a.relay_path, b.relay_path,
                              [](const auto& x, const auto& y) { return same(x, y); }) &&
           a.message == b.message && a.traceback == b.traceback &&
           a.canceller.has_value() == b.canceller.has_value() &&
           (!a.canceller || same(*a.canceller, *b.canceller)) && same(a.sender, b.sender);
}

}  // namespace

std::uint64_t walk_control(const wire::ControlView& view) {
    std::uint64_t h = static_cast<std::uint64_t>(view.type()) + touch(view.type_name());
    switch (view.type()) {
        case fb::ControlBody::Start: {
            const auto* m = view.as<fb::Start>();
            h ^= fold(m->cid()) ^ fold(m->fn_name()) ^ fold(wire::from_fb(m->args())) ^
                 fold(m->options());
            break;
        }
        case fb::ControlBody::StartAck: {
            const auto* m = view.as<fb::StartAck>();
            h ^= fold(m->cid()) ^ fold(m->options());
            break;
        }
        case fb::ControlBody::Started: {
            const auto* m = view.as<fb::Started>();
            h ^= fold(m->cid()) ^ fold(wire::from_fb(m->value()));
            break;
        }
        case fb::ControlBody::Stop: {
            const auto* m = view.as<fb::Stop>();
            h ^= fold(m->cid()) ^ m->data_seq();
            break;
        }
        case fb::ControlBody::Return: {
            const auto* m = view.as<fb::Return>();
            h ^= fold(m->cid()) ^ m->data_seq() ^ fold(wire::from_fb(m->value()));
            break;
        }
        case fb::ControlBody::Error: {
            const auto* m = view.as<fb::Error>();
            h ^= fold(m->cid()) ^ m->data_seq() ^ fold(m->src_uid()) ^ fold(m->boxed_type()) ^
                 fold(m->src_type()) ^ fold(m->message()) ^ fold(m->traceback()) ^
                 fold(m->canceller()) ^ fold(m->sender());
            if (const auto* p = m->relay_path(); p != nullptr) {
                for (const fb::Uid* hop : *p) h ^= fold(hop);
            }
            break;
        }
        case fb::ControlBody::CancelRequest: {
            const auto* m = view.as<fb::CancelRequest>();
            h ^= m->request_id() ^ fold(m->requester());
            if (const auto* t = m->target_as_ContextTarget()) h ^= fold(t->cid());
            break;
        }
        case fb::ControlBody::CancelAck: {
            const auto* m = view.as<fb::CancelAck>();
            h ^= m->request_id() ^ (m->found() ? 1U : 0U);
            break;
        }
        case fb::ControlBody::StreamOpen: {
            const auto* m = view.as<fb::StreamOpen>();
            h ^= fold(m->cid()) ^ m->offset() ^ m->size_bytes() ^ m->generation();
            break;
        }
        case fb::ControlBody::LinkOpen: {
            const auto* m = view.as<fb::LinkOpen>();
            h ^= m->layout_version() ^ m->protocol_version() ^ fold(m->sender());
            break;
        }
        case fb::ControlBody::LinkClose: {
            const auto* m = view.as<fb::LinkClose>();
            h ^= static_cast<std::uint64_t>(m->reason()) ^ m->layout_version() ^
                 m->protocol_version() ^ fold(m->detail());
            break;
        }
        case fb::ControlBody::Heartbeat: {
            const auto* m = view.as<fb::Heartbeat>();
            h ^= m->counter() ^ m->monotonic_ns();
            break;
        }
        case fb::ControlBody::NONE:
            contract_violation(__FILE__, __LINE__, "decode_control returned a view without a body");
    }
    return h;
}

void check_round_trip(const wire::ControlView& view) {
    // No truncation: the round trip must keep every byte of an Error.
    wire::ControlEncoder enc(std::size_t{1} << 30);
    std::span<const std::byte> out;
    const auto again = [&]() {
        std::optional<wire::ControlView> v;
        FUZZ_CHECK(expect_only<>("decode_control(re-encoded)",
                                 [&]() { v.emplace(wire::decode_control(out)); }));
        FUZZ_CHECK(v->type() == view.type());
        return *v;
    };
    switch (view.type()) {
        case fb::ControlBody::Start: {
            const auto* m = view.as<fb::Start>();
            const wire::StartFields f{wire::from_fb(*m->cid()), text(m->fn_name()),
                                      wire::from_fb(m->args()), settings(m->options())};
            out = enc.start(f);
            const auto* r = again().as<fb::Start>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == f.cid && text(r->fn_name()) == f.fn_name &&
                       same(wire::from_fb(r->args()), f.args) &&
                       same(settings(r->options()), f.options));
            break;
        }
        case fb::ControlBody::StartAck: {
            const auto* m = view.as<fb::StartAck>();
            out = enc.start_ack(wire::from_fb(*m->cid()), settings(m->options()));
            const auto* r = again().as<fb::StartAck>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == wire::from_fb(*m->cid()) &&
                       same(settings(r->options()), settings(m->options())));
            break;
        }
        case fb::ControlBody::Started: {
            const auto* m = view.as<fb::Started>();
            out = enc.started(wire::from_fb(*m->cid()), wire::from_fb(m->value()));
            const auto* r = again().as<fb::Started>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == wire::from_fb(*m->cid()) &&
                       same(wire::from_fb(r->value()), wire::from_fb(m->value())));
            break;
        }
        case fb::ControlBody::Stop: {
            const auto* m = view.as<fb::Stop>();
            out = enc.stop(wire::from_fb(*m->cid()), m->data_seq());
            const auto* r = again().as<fb::Stop>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == wire::from_fb(*m->cid()) &&
                       r->data_seq() == m->data_seq());
            break;
        }
        case fb::ControlBody::Return: {
            const auto* m = view.as<fb::Return>();
            out = enc.return_value(wire::from_fb(*m->cid()), m->data_seq(),
                                   wire::from_fb(m->value()));
            const auto* r = again().as<fb::Return>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == wire::from_fb(*m->cid()) &&
                       r->data_seq() == m->data_seq() &&
                       same(wire::from_fb(r->value()), wire::from_fb(m->value())));
            break;
        }
        case fb::ControlBody::Error: {
            const auto* m = view.as<fb::Error>();
            const ErrorCopy e = error_fields(*m);
            out = enc.error(e.fields);
            const ErrorCopy r = error_fields(*again().as<fb::Error>());
            FUZZ_CHECK(same(r.fields, e.fields));
            break;
        }
        case fb::ControlBody::CancelRequest: {
            const auto* m = view.as<fb::CancelRequest>();
            const wire::UidRef who = wire::from_fb(*m->requester());
            const auto* target = m->target_as_ContextTarget();
            out = target != nullptr
                      ? enc.cancel_context(m->request_id(), who, wire::from_fb(*target->cid()))
                      : enc.cancel_actor(m->request_id(), who);
            const auto* r = again().as<fb::CancelRequest>();
            FUZZ_CHECK(r->request_id() == m->request_id() &&
                       same(wire::from_fb(*r->requester()), who) &&
                       r->target_type() == m->target_type());
            if (target != nullptr) {
                FUZZ_CHECK(wire::from_fb(*r->target_as_ContextTarget()->cid()) ==
                           wire::from_fb(*target->cid()));
            }
            break;
        }
        case fb::ControlBody::CancelAck: {
            const auto* m = view.as<fb::CancelAck>();
            out = enc.cancel_ack(m->request_id(), m->found());
            const auto* r = again().as<fb::CancelAck>();
            FUZZ_CHECK(r->request_id() == m->request_id() && r->found() == m->found());
            break;
        }
        case fb::ControlBody::StreamOpen: {
            const auto* m = view.as<fb::StreamOpen>();
            const wire::StreamOpenFields f{wire::from_fb(*m->cid()), m->offset(), m->size_bytes(),
                                           m->generation()};
            out = enc.stream_open(f);
            const auto* r = again().as<fb::StreamOpen>();
            FUZZ_CHECK(wire::from_fb(*r->cid()) == f.cid && r->offset() == f.offset &&
                       r->size_bytes() == f.size_bytes && r->generation() == f.generation);
            break;
        }
        case fb::ControlBody::LinkOpen: {
            const auto* m = view.as<fb::LinkOpen>();
            const wire::UidRef who = wire::from_fb(*m->sender());
            out = enc.link_open(who, m->layout_version(), m->protocol_version());
            const auto* r = again().as<fb::LinkOpen>();
            FUZZ_CHECK(same(wire::from_fb(*r->sender()), who) &&
                       r->layout_version() == m->layout_version() &&
                       r->protocol_version() == m->protocol_version());
            break;
        }
        case fb::ControlBody::LinkClose: {
            const auto* m = view.as<fb::LinkClose>();
            out = enc.link_close(m->reason(), text(m->detail()), m->layout_version(),
                                 m->protocol_version());
            const auto* r = again().as<fb::LinkClose>();
            FUZZ_CHECK(r->reason() == m->reason() && text(r->detail()) == text(m->detail()) &&
                       r->layout_version() == m->layout_version() &&
                       r->protocol_version() == m->protocol_version());
            break;
        }
        case fb::ControlBody::Heartbeat: {
            const auto* m = view.as<fb::Heartbeat>();
            out = enc.heartbeat(m->counter(), m->monotonic_ns());
            const auto* r = again().as<fb::Heartbeat>();
            FUZZ_CHECK(r->counter() == m->counter() && r->monotonic_ns() == m->monotonic_ns());
            break;
        }
        case fb::ControlBody::NONE:
            contract_violation(__FILE__, __LINE__, "decode_control returned a view without a body");
    }
}

}  // namespace shmctx::fuzz
