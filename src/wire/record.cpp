#include "shmctx/wire/record.hpp"

namespace shmctx::wire {

bool is_known_kind(std::uint16_t kind) noexcept { return kind <= 2; }

}  // namespace shmctx::wire
