// shmctx_bench_unwind: the floor of a cancel's latency that no protocol work can remove — the
// C++ unwinding of the cancelled task (issue #6; bench/README.md §7).
//
// A task blocked in MsgStream::receive() that is cancelled leaves through a shmctx::Cancelled
// thrown in the library and caught at its endpoint's scope boundary: about seven frames (the
// wait, receive, the user's endpoint, std::function, the scope boundary), some with
// destructors to run. This measures exactly that shape — a throw through seven non-inlined
// frames, three of them with a destructor, one through std::function — so that the cancel
// latency of shmctx_bench_context can be read against what the unwinder alone costs on the
// same machine.
#include <benchmark/benchmark.h>

#include <functional>
#include <string>

#include "shmctx/errors.hpp"

namespace {

struct Cleanup {
    std::string held;  // a destructor with work, as a stream or a lock guard has
    ~Cleanup() { benchmark::DoNotOptimize(held.data()); }
};

[[gnu::noinline]] void wait_frame() { throw shmctx::Cancelled{}; }
[[gnu::noinline]] void receive_frame() {
    Cleanup c{"receive"};
    wait_frame();
    benchmark::ClobberMemory();
}
[[gnu::noinline]] void stream_frame() {
    receive_frame();
    benchmark::ClobberMemory();
}
[[gnu::noinline]] void user_frame() {
    Cleanup c{"user"};
    stream_frame();
    benchmark::ClobberMemory();
}
[[gnu::noinline]] void function_frame() {
    const std::function<void()> endpoint = user_frame;
    endpoint();
    benchmark::ClobberMemory();
}
[[gnu::noinline]] void scope_frame() {
    Cleanup c{"scope"};
    function_frame();
    benchmark::ClobberMemory();
}

void BM_CancelledThroughSevenFrames(benchmark::State& state) {
    for (auto _ : state) {
        try {
            scope_frame();
        } catch (const shmctx::Cancelled&) {
            benchmark::ClobberMemory();
        }
    }
}
BENCHMARK(BM_CancelledThroughSevenFrames);

[[gnu::noinline]] void throw_here() { throw shmctx::Cancelled{}; }

void BM_CancelledThroughOneFrame(benchmark::State& state) {
    for (auto _ : state) {
        try {
            throw_here();
        } catch (const shmctx::Cancelled&) {
            benchmark::ClobberMemory();
        }
    }
}
BENCHMARK(BM_CancelledThroughOneFrame);

}  // namespace

BENCHMARK_MAIN();
