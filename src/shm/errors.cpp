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
