// Error boxing, relaying and unboxing (src/core/boxing.hpp; spec §3.8, §3.2, §6.17).
#include "core/boxing.hpp"

#include <stdexcept>
#include <string>
#include <utility>

namespace shmctx::detail {

namespace {

constexpr std::string_view kContextCancelled = "ContextCancelled";
constexpr std::string_view kRemoteActorError = "RemoteActorError";
constexpr std::string_view kStreamOverrun = "StreamOverrun";
constexpr std::string_view kNonStdException = "<non-std exception>";
// std::throw_with_nested chains are short in practice; a very deep one has its tail elided.
constexpr int kMaxNestedCauses = 8;

wire::UidRef ref(const Uid& u) noexcept { return wire::UidRef{u.name, u.uuid}; }

Uid own(const wire::UidRef& u) { return Uid{std::string(u.name), u.uuid}; }

// "endpoint 'fn' of echo@1a2b3c4d (cid 1a2b3c4d#3)" or "echo@1a2b3c4d (cid 1a2b3c4d#3)".
std::string place(const Uid& self, const Cid& cid, std::string_view endpoint) {
    std::string text;
    if (!endpoint.empty()) {
        text = "endpoint '" + std::string(endpoint) + "' of ";
    }
    return text + self.to_string() + " (cid " + cid.to_string() + ")";
}

// "\ncaused by: <type>: <what>" per link of a std::throw_with_nested chain.
void append_causes(std::string& out, const std::exception& e) {
    std::exception_ptr cause;
    if (const auto* n = dynamic_cast<const std::nested_exception*>(&e); n != nullptr) {
        cause = n->nested_ptr();
    }
    for (int depth = 0; cause != nullptr; ++depth) {
        if (depth == kMaxNestedCauses) {
            out += "\ncaused by: ...";
            return;
        }
        std::exception_ptr next;
        try {
            std::rethrow_exception(cause);
        } catch (const std::exception& c) {
            out += "\ncaused by: " + error_type_name(c) + ": " + c.what();
            if (const auto* n = dynamic_cast<const std::nested_exception*>(&c); n != nullptr) {
                next = n->nested_ptr();
            }
        } catch (...) {
            out += "\ncaused by: ";
            out += kNonStdException;
        }
        cause = next;
    }
}

// A remote error re-raised here: keep its history, say where it passed.
std::string relayed_traceback(const RemoteActorError& e, const Uid& self, const Cid& cid,
                              std::string_view endpoint) {
    std::string text =
        "relayed by " + place(self, cid, endpoint) + " from " + e.relay_uid().to_string();
    if (!e.traceback().empty()) {
        text += "\n" + e.traceback();
    }
    return text;
}

// The fields of an error raised here (spec §3.8 "otherwise" branch for a non-RAE type).
// `label` names the type in the traceback when it differs from the shipped name.
RemoteErrorInfo raised_here(std::string type, std::string message, const Uid& self, const Cid& cid,
                            std::string_view endpoint, std::string_view label = {}) {
    RemoteErrorInfo info;
    info.src_uid = self;
    info.boxed_type = type;
    info.src_type = std::move(type);
    info.traceback = (label.empty() ? info.src_type : std::string(label)) + " raised in " +
                     place(self, cid, endpoint) + ": " + message;
    info.message = std::move(message);
    return info;
}

}  // namespace

wire::ErrorFields BoxedError::fields(std::uint64_t data_seq) {
    path_refs_.clear();
    path_refs_.reserve(info.relay_path.size());
    for (const Uid& u : info.relay_path) {
        path_refs_.push_back(ref(u));
    }
    wire::ErrorFields f;
    f.cid = info.cid.value_or(Cid{});
    f.data_seq = data_seq;
    f.src_uid = ref(info.src_uid);
    f.boxed_type = info.boxed_type;
    f.src_type = info.src_type;
    f.relay_path = path_refs_;
    f.message = info.message;
    f.traceback = info.traceback;
    if (info.canceller) {
        f.canceller = ref(*info.canceller);
    }
    f.sender = ref(hop);
    return f;
}

BoxedError box(const std::exception_ptr& error, const Uid& self, const Cid& cid,
               std::string_view endpoint) {
    if (error == nullptr) {
        throw std::invalid_argument("shmctx::detail::box: null exception_ptr");
    }
    RemoteErrorInfo info;
    try {
        std::rethrow_exception(error);
    } catch (const ContextCancelled& e) {
        if (e.info().relay_path.empty()) return box_own_cancel(e.info(), self, cid, endpoint);
        // Spec §3.6 "a relayed ctxc": re-packed with us as the source, canceller and path kept.
        info = e.info();
        info.traceback = info.relay_path.empty()
                             ? std::string(kContextCancelled) + " raised in " +
                                   place(self, cid, endpoint) +
                                   (info.traceback.empty() ? "" : "\n" + info.traceback)
                             : relayed_traceback(e, self, cid, endpoint);
        info.src_uid = self;
        info.boxed_type = kContextCancelled;
        info.src_type = kContextCancelled;
    } catch (const RemoteActorError& e) {
        // An inception (spec §3.8, §6.17): the origin survives every hop.
        info = e.info();
        info.traceback = relayed_traceback(e, self, cid, endpoint);
        info.boxed_type = kRemoteActorError;
    } catch (const StreamOverrun& e) {
        info = raised_here(std::string(kStreamOverrun), e.what(), self, cid, endpoint);
        info.sender = e.sender();
    } catch (const std::exception& e) {
        std::string name = error_type_name(e);
        std::string label;
        if (const std::type_info* t = find_error_type(name); t == nullptr || *t != typeid(e)) {
            // Shipped under its nearest registered base: keep the real C++ type for humans.
            label = demangled_type_name(typeid(e)) + " (shipped as " + name + ")";
        }
        info = raised_here(std::move(name), e.what(), self, cid, endpoint, label);
        append_causes(info.traceback, e);
    } catch (const Cancelled&) {
        info = make_context_cancelled(self, self, std::nullopt, cid, Side::child).info();
        info.traceback = std::string(kContextCancelled) + " raised in " +
                         place(self, cid, endpoint) + " (an uncaught shmctx::Cancelled)";
    } catch (...) {
        info = raised_here(std::string(kNonStdException),
                           "an object not derived from std::exception was thrown", self, cid,
                           endpoint);
    }
    info.cid = cid;
    info.relay_path.push_back(self);
    BoxedError out;
    out.info = std::move(info);
    out.hop = self;
    return out;
}

ContextCancelled make_context_cancelled(const Uid& self, const Uid& peer,
                                        const std::optional<Uid>& canceller, const Cid& cid,
                                        Side side, std::string_view reason) {
    return ContextCancelled(context_cancelled_info(self, peer, canceller, cid, side, reason));
}

RemoteErrorInfo context_cancelled_info(const Uid& self, const Uid& peer,
                                       const std::optional<Uid>& canceller, const Cid& cid,
                                       Side side, std::string_view reason) {
    const Uid& who = canceller.value_or(self);
    std::string text = "'" + std::string(to_string(side)) + "'-side task was cancelled by ";
    if (!canceller) {
        text += "an unknown cause";
    } else if (who == self) {
        text += "itself";
    } else if (who == peer) {
        text += "its '" + std::string(to_string(opposite(side))) + "'-side peer";
    } else {
        text += "a remote peer";
    }
    text += "\ncanceller: " + who.to_string() + "\ncancellee: " + self.to_string() +
            "\ncid: " + cid.to_string();
    if (!reason.empty()) {
        text += "\nreason: " + std::string(reason);
    }
    RemoteErrorInfo info;
    info.src_uid = self;
    info.boxed_type = kContextCancelled;
    info.src_type = kContextCancelled;
    info.message = std::move(text);
    info.cid = cid;
    info.canceller = who;
    return info;
}

RemoteErrorInfo unbox_info(const wire::fb::Error& m) {
    // Required fields are present after verification; the guards keep this total anyway.
    auto text = [](const flatbuffers::String* s) {
        return s == nullptr ? std::string() : s->str();
    };
    auto uid = [](const wire::fb::Uid* u) { return u == nullptr ? Uid{} : own(wire::from_fb(*u)); };
    RemoteErrorInfo info;
    if (m.cid() != nullptr) {
        info.cid = wire::from_fb(*m.cid());
    }
    info.src_uid = uid(m.src_uid());
    info.boxed_type = text(m.boxed_type());
    info.src_type = text(m.src_type());
    if (const auto* path = m.relay_path(); path != nullptr) {
        info.relay_path.reserve(path->size() + 1);
        for (const wire::fb::Uid* hop : *path) {
            info.relay_path.push_back(uid(hop));
        }
    }
    if (m.sender() != nullptr) {
        // The record's sender is the last hop by definition (schema): make relay_uid() say so
        // even when a peer sent no path.
        Uid last = uid(m.sender());
        if (info.relay_path.empty() || !(info.relay_path.back() == last)) {
            info.relay_path.push_back(std::move(last));
        }
    }
    info.message = text(m.message());
    info.traceback = text(m.traceback());
    if (m.canceller() != nullptr) {
        info.canceller = uid(m.canceller());
    }
    if (info.src_type == kStreamOverrun) {
        info.sender = info.src_uid;
    }
    return info;
}

BoxedError box_own_cancel(const RemoteErrorInfo& e, const Uid& self, const Cid& cid,
                          std::string_view endpoint) {
    BoxedError out;
    out.info = e;
    RemoteErrorInfo& info = out.info;
    info.traceback = std::string(kContextCancelled) + " raised in " + place(self, cid, endpoint) +
                     (info.traceback.empty() ? "" : "\n" + info.traceback);
    info.src_uid = self;
    info.boxed_type = kContextCancelled;
    info.src_type = kContextCancelled;
    info.cid = cid;
    info.relay_path.push_back(self);
    out.hop = self;
    return out;
}

Unboxed unbox_fields(const wire::fb::Error& record) {
    RemoteErrorInfo info = unbox_info(record);
    Unboxed out;
    // make_exception_ptr copies the object; the copy shares the info block `info()` refers
    // to, so the pointer taken here stays valid as long as the exception_ptr.
    if (info.boxed_type == kContextCancelled) {
        ContextCancelled e(std::move(info));
        out.info = &e.info();
        out.context_cancelled = true;
        out.error = std::make_exception_ptr(std::move(e));
    } else {
        RemoteActorError e(std::move(info));
        out.info = &e.info();
        out.error = std::make_exception_ptr(std::move(e));
    }
    return out;
}

std::exception_ptr unbox(const wire::fb::Error& record) { return unbox_fields(record).error; }

std::exception_ptr unbox(const wire::ControlView& view) {
    const auto* record = view.as<wire::fb::Error>();
    if (record == nullptr) {
        throw std::invalid_argument("shmctx::detail::unbox: a " + std::string(view.type_name()) +
                                    " record is not an Error");
    }
    return unbox(*record);
}

}  // namespace shmctx::detail
