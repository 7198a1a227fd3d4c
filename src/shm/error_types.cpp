// Semantic error types and the error-type registry (include/shmctx/errors.hpp).
// Boxing and unboxing (Error records) live in core: src/core/boxing.cpp.
#include <cxxabi.h>

#include <cstdlib>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <typeindex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "shmctx/errors.hpp"

namespace shmctx {

// --- simple types ---

InvalidOperation::InvalidOperation(const std::string& what)
    : Error(Errc::invalid_operation, "Invalid Operation: " + what) {}

PayloadTooLarge::PayloadTooLarge(std::string_view what_value, std::size_t size_bytes,
                                 std::size_t cap_bytes, std::string_view limit)
    : Error(Errc::payload_too_large, std::string(what_value) + " is " + std::to_string(size_bytes) +
                                         " bytes, over the cap of " + std::to_string(cap_bytes) +
                                         " bytes " + std::string(limit)),
      size_bytes_(size_bytes),
      cap_bytes_(cap_bytes) {}

Lagged::Lagged(std::uint64_t missed)
    : Error(Errc::lagged, "Lagged: the subscriber fell behind and lost " + std::to_string(missed) +
                              (missed == 1 ? " message" : " messages")),
      missed_(missed) {}

namespace {
std::string group_text(const std::string& headline, const std::vector<std::exception_ptr>& errors) {
    std::string text = headline;
    for (std::size_t i = 0; i < errors.size(); ++i) {
        text += "\n  [" + std::to_string(i + 1) + "] ";
        try {
            std::rethrow_exception(errors[i]);
        } catch (const std::exception& e) {
            text += e.what();
        } catch (...) {
            text += "(not a std::exception)";
        }
    }
    return text;
}
}  // namespace

ErrorGroup::ErrorGroup(const std::string& what, std::vector<std::exception_ptr> errors)
    : Error(Errc::error_group, group_text(what, errors)), errors_(std::move(errors)) {}

std::string_view to_string(OverrunLimit limit) noexcept {
    switch (limit) {
        case OverrunLimit::messages:
            return "messages";
        case OverrunLimit::bytes:
            return "bytes";
        case OverrunLimit::spill_cap:
            return "spill_cap";
        case OverrunLimit::block_timeout:
            return "block_timeout";
    }
    return "unknown";
}

namespace {

std::string overrun_text(const Uid& sender, const Uid& receiver, const Cid& cid, OverrunLimit limit,
                         std::string_view detail) {
    std::string text = "StreamOverrun: sender " + sender.to_string() + " overran receiver " +
                       receiver.to_string() + " on context " + cid.to_string() + " (limit " +
                       std::string(to_string(limit));
    if (!detail.empty()) {
        text += ": ";
        text += detail;
    }
    text += ")";
    return text;
}

}  // namespace

StreamOverrun::StreamOverrun(Uid sender, Uid receiver, Cid cid, OverrunLimit limit,
                             std::string_view detail)
    : Error(Errc::stream_overrun, overrun_text(sender, receiver, cid, limit, detail)),
      data_(
          std::make_shared<const Data>(Data{std::move(sender), std::move(receiver), cid, limit})) {}

// --- RemoteActorError ---

namespace {

// "remote std::runtime_error from a@1a2b3c4d (relayed a@1a2b3c4d -> b@5e6f7a8b, cid 1a2b3c4d#3):
// boom". The source is named first: it is what a reader of a log needs.
std::string describe(const RemoteErrorInfo& i) {
    std::string text = "remote " + i.src_type + " from " + i.src_uid.to_string();
    std::string extra;
    if (i.boxed_type != i.src_type) {
        extra = "relayed ";
        for (std::size_t k = 0; k < i.relay_path.size(); ++k) {
            extra += (k == 0 ? "" : " -> ") + i.relay_path[k].to_string();
        }
    }
    if (i.cid) {
        extra += (extra.empty() ? "cid " : ", cid ") + i.cid->to_string();
    }
    if (!extra.empty()) {
        text += " (" + extra + ")";
    }
    text += ": " + i.message;
    return text;
}

std::shared_ptr<const RemoteErrorInfo> with_canceller(RemoteErrorInfo info) {
    if (!info.canceller) {
        info.canceller = info.src_uid;
    }
    return std::make_shared<const RemoteErrorInfo>(std::move(info));
}

}  // namespace

RemoteActorError::RemoteActorError(RemoteErrorInfo info)
    : RemoteActorError(Errc::remote_actor_error,
                       std::make_shared<const RemoteErrorInfo>(std::move(info))) {}

RemoteActorError::RemoteActorError(Errc code, std::shared_ptr<const RemoteErrorInfo> info)
    : Error(code, describe(*info)), info_(std::move(info)) {}

const std::type_info* RemoteActorError::boxed_type() const {
    return find_error_type(info_->boxed_type);
}

const std::type_info* RemoteActorError::src_type() const {
    return find_error_type(info_->src_type);
}

ContextCancelled::ContextCancelled(RemoteErrorInfo info)
    : RemoteActorError(Errc::context_cancelled, with_canceller(std::move(info))) {}

// --- registry ---

namespace {

constexpr std::size_t kMaxTypeNameBytes = 128;
// Bounds the base-class walk of error_type_name(); real exception hierarchies are a few deep.
constexpr std::size_t kMaxBasesVisited = 256;

class Registry {
public:
    Registry() {
        add(typeid(std::exception), "std::exception");
        add(typeid(std::runtime_error), "std::runtime_error");
        add(typeid(std::logic_error), "std::logic_error");
        add(typeid(std::invalid_argument), "std::invalid_argument");
        add(typeid(std::out_of_range), "std::out_of_range");
        add(typeid(std::length_error), "std::length_error");
        add(typeid(std::domain_error), "std::domain_error");
        add(typeid(std::range_error), "std::range_error");
        add(typeid(std::overflow_error), "std::overflow_error");
        add(typeid(std::underflow_error), "std::underflow_error");
        add(typeid(std::system_error), "std::system_error");
        add(typeid(std::bad_alloc), "std::bad_alloc");
        add(typeid(Error), "Error");
        add(typeid(ProtocolError), "ProtocolError");
        add(typeid(LayoutError), "LayoutError");
        add(typeid(DecodeError), "DecodeError");
        add(typeid(ShmExhausted), "ShmExhausted");
        add(typeid(PermissionDenied), "PermissionDenied");
        add(typeid(ActorNotFound), "ActorNotFound");
        add(typeid(InvalidName), "InvalidName");
        add(typeid(NameTaken), "NameTaken");
        add(typeid(SystemError), "SystemError");
        add(typeid(EndOfChannel), "EndOfChannel");
        add(typeid(ClosedResourceError), "ClosedResourceError");
        add(typeid(TooManyContexts), "TooManyContexts");
        add(typeid(TimedOut), "TimedOut");
        add(typeid(NotExposed), "NotExposed");
        add(typeid(InvalidOperation), "InvalidOperation");
        add(typeid(PayloadTooLarge), "PayloadTooLarge");
        add(typeid(TransportClosed), "TransportClosed");
        add(typeid(PeerDied), "PeerDied");
        add(typeid(PeerUnresponsive), "PeerUnresponsive");
        add(typeid(StreamOverrun), "StreamOverrun");
        add(typeid(Lagged), "Lagged");
        add(typeid(ActorFailed), "ActorFailed");
        add(typeid(ErrorGroup), "ErrorGroup");
        add(typeid(RemoteActorError), "RemoteActorError");
        add(typeid(ContextCancelled), "ContextCancelled");
    }

    void add(const std::type_info& type, std::string_view name) {
        if (name.empty() || name.size() > kMaxTypeNameBytes) {
            throw std::invalid_argument("error type name must be 1-" +
                                        std::to_string(kMaxTypeNameBytes) + " bytes, got " +
                                        std::to_string(name.size()));
        }
        for (const char c : name) {
            if (c < 0x20 || c > 0x7E) {
                throw std::invalid_argument("error type name '" + std::string(name) +
                                            "' has a character outside printable ASCII");
            }
        }
        const std::unique_lock lock(mutex_);
        const std::type_index key(type);
        const auto by_type = names_.find(key);
        if (by_type != names_.end()) {
            if (by_type->second == name) {
                return;  // idempotent
            }
            throw std::invalid_argument("error type " + demangle(type) +
                                        " is already registered as '" + by_type->second +
                                        "', cannot register it as '" + std::string(name) + "'");
        }
        const std::string owned(name);
        const auto by_name = types_.find(owned);
        if (by_name != types_.end()) {
            throw std::invalid_argument("error type name '" + owned + "' is already taken by " +
                                        demangle(*by_name->second) + ", cannot give it to " +
                                        demangle(type));
        }
        types_.emplace(owned, &type);
        names_.emplace(key, owned);
    }

    const std::type_info* find(std::string_view name) const {
        const std::shared_lock lock(mutex_);
        const auto it = types_.find(std::string(name));
        return it == types_.end() ? nullptr : it->second;
    }

    std::string name_of(const std::type_info& type) const {
        {
            const std::shared_lock lock(mutex_);
            // The type itself, else its nearest registered public base, breadth first (an
            // unregistered app::ParseError : std::runtime_error ships as std::runtime_error, so
            // the receiver's boxed_is<std::runtime_error>() holds; box() keeps the C++ name in
            // the traceback).
            std::vector<const std::type_info*> level{&type};
            std::size_t visited = 0;
            while (!level.empty() && visited < kMaxBasesVisited) {
                std::vector<const std::type_info*> next;
                for (const std::type_info* t : level) {
                    ++visited;
                    const auto it = names_.find(std::type_index(*t));
                    if (it != names_.end()) {
                        return it->second;
                    }
                    public_bases(*t, next);
                }
                level = std::move(next);
            }
        }
        std::string name = demangle(type);
        if (find(name) != nullptr) {
            // An unregistered type whose C++ name equals a registered wire name (e.g. a user's
            // ::StreamOverrun): a peer must not resolve it to the registered type.
            name += " (unregistered)";
        }
        return name;
    }

    // The direct public bases of a class type, read from the Itanium C++ ABI type_info
    // (GCC/Clang on Linux): single inheritance (__si_class_type_info) or multiple/virtual
    // (__vmi_class_type_info). Other type_infos (scalars, classes without bases) have none.
    static void public_bases(const std::type_info& type, std::vector<const std::type_info*>& out) {
        if (const auto* si = dynamic_cast<const abi::__si_class_type_info*>(&type); si != nullptr) {
            out.push_back(si->__base_type);
            return;
        }
        if (const auto* vmi = dynamic_cast<const abi::__vmi_class_type_info*>(&type);
            vmi != nullptr) {
            const abi::__base_class_type_info* bases = vmi->__base_info;  // __base_count long
            for (unsigned i = 0; i < vmi->__base_count; ++i) {
                if (bases[i].__is_public_p()) {
                    out.push_back(bases[i].__base_type);
                }
            }
        }
    }

    static std::string demangle(const std::type_info& type) {
        int status = 0;
        std::unique_ptr<char, decltype(&std::free)> out(
            abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), &std::free);
        return status == 0 && out != nullptr ? std::string(out.get()) : std::string(type.name());
    }

private:
    mutable std::shared_mutex mutex_;
    std::unordered_map<std::string, const std::type_info*> types_;  // name -> type
    std::unordered_map<std::type_index, std::string> names_;        // type -> name
};

Registry& registry() {
    static Registry instance;  // thread-safe initialisation (magic static)
    return instance;
}

}  // namespace

void detail::register_error_type_impl(const std::type_info& type, std::string_view name) {
    registry().add(type, name);
}

const std::type_info* find_error_type(std::string_view name) { return registry().find(name); }

std::string detail::demangled_type_name(const std::type_info& type) {
    return Registry::demangle(type);
}

std::string error_type_name(const std::type_info& type) { return registry().name_of(type); }

}  // namespace shmctx
