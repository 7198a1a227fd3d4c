// Uid and Cid text forms (include/shmctx/ids.hpp).
#include "shmctx/ids.hpp"

namespace shmctx {

std::string Uid::to_string() const { return name + "@" + uuid.short_hex(); }

std::string Cid::to_string() const { return opener.short_hex() + "#" + std::to_string(seq); }

}  // namespace shmctx
