// Compile probe (not linked into any test binary): MsgStream::send_with / try_send_with must
// accept a fill callable passed as an lvalue (a named lambda, a function object kept for reuse),
// const or not, as well as an rvalue. Built by the StreamCompile.SendWithAcceptsAnLvalueFill test.
#include <cstddef>
#include <cstring>
#include <span>

#include "shmctx/context.hpp"

namespace {

struct Filler {
    std::size_t operator()(std::span<std::byte> buffer) const {
        std::memset(buffer.data(), 1, buffer.size());
        return buffer.size();
    }
};

}  // namespace

void stream_fill_lvalue_probe(shmctx::MsgStream& stream) {
    const auto named = [](std::span<std::byte> buffer) { return buffer.size(); };
    auto mutable_named = [n = std::size_t{0}](std::span<std::byte> buffer) mutable {
        ++n;
        return buffer.size();
    };
    Filler filler;
    const Filler const_filler;
    (void)stream.try_send_with(8, named);
    (void)stream.try_send_with(8, mutable_named);
    (void)stream.try_send_with(8, filler);
    stream.send_with(8, const_filler);
    stream.send_with(8, Filler{});
}
