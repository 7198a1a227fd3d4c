#include "shmctx/errors.hpp"

namespace shmctx {
namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "shmctx"; }
    std::string message(int code) const override {
        switch (static_cast<Errc>(code)) {
            case Errc::protocol_error:
                return "protocol error";
            case Errc::layout_error:
                return "layout or version mismatch";
            case Errc::decode_error:
                return "decode error";
            case Errc::shm_exhausted:
                return "shared memory exhausted";
            case Errc::permission_denied:
                return "permission denied";
            case Errc::actor_not_found:
                return "actor not found";
            case Errc::invalid_name:
                return "invalid name";
            case Errc::name_taken:
                return "name taken";
            case Errc::system_error:
                return "system error";
            case Errc::remote_actor_error:
                return "remote actor error";
            case Errc::context_cancelled:
                return "context cancelled";
            case Errc::stream_overrun:
                return "stream overrun";
            case Errc::end_of_channel:
                return "end of channel";
            case Errc::closed_resource:
                return "closed resource";
            case Errc::invalid_operation:
                return "invalid operation";
            case Errc::too_many_contexts:
                return "too many contexts";
            case Errc::payload_too_large:
                return "payload too large";
            case Errc::transport_closed:
                return "transport closed";
            case Errc::peer_died:
                return "peer died";
            case Errc::timed_out:
                return "timed out";
            case Errc::not_exposed:
                return "not exposed";
            case Errc::lagged:
                return "lagged";
            case Errc::peer_unresponsive:
                return "peer unresponsive";
            case Errc::actor_failed:
                return "actor failed";
            case Errc::error_group:
                return "several errors";
        }
        return "unknown shmctx error";
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const Category category;
    return category;
}

}  // namespace shmctx
