// Spawn-to-ready of a child actor (issue 8's bar): what ActorNursery::start_actor costs a
// supervisor, and what leaving the nursery (cancel, exit, reap) costs, beside the floor of the
// same machine measured in the same run: posix_spawn of the same executable until its main
// has run and written a line (Spawner::spawn of `nursery_child --version`, read on a pipe).
//
//   shmctx_bench_nursery [rounds=100] [path/to/nursery_child]
//
// Each round opens a nursery, times start_actor (spawn, run_actor's claim and setup, the ready
// line, connect), one run of the child's "do_nothing" endpoint, and the nursery's exit (the
// child's cancel acked, its exit and reaping). Prints p50/p90/max in ms for each, and the
// ratio of start_actor's p50 to the floor's p50. Exits 1 if a round fails.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "latency_series.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/nursery.hpp"
#include "shmctx/spawner.hpp"

using namespace shmctx;
using namespace std::chrono_literals;

namespace {

using bench::LatencySeries;
using bench::ms_between;

int run(std::size_t rounds, const std::string& child_exe) {
    test::NamespaceGuard guard("bench-nursery");
    ActorOptions options;
    options.ns = guard.names.ns();
    Actor root("root", options);
    LatencySeries floor{"spawn_to_main_floor", {}};
    LatencySeries start{"start_actor_spawn_to_ready", {}};
    LatencySeries first_call{"first_run_round_trip", {}};
    LatencySeries leave{"nursery_exit_cancel_reap", {}};
    Spawner spawner;
    for (std::size_t i = 0; i < rounds; ++i) {
        // Interleaved with the measured rounds, so both see the same machine state.
        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        SpawnOptions so;
        so.stdout_fd = out[1];
        auto t0 = Clock::now();
        ChildProcess p = spawner.spawn(child_exe, {"--version"}, {}, so);
        ::close(out[1]);
        char c = 0;
        const bool said = ::read(out[0], &c, 1) == 1;  // its first output byte: it runs
        const auto t1 = Clock::now();
        ::close(out[0]);
        const auto st = p.wait(Deadline(10s));
        if (!said || !st || !st->success()) {
            std::fprintf(stderr, "floor round %zu: %s\n", i, p.describe().c_str());
            return 1;
        }
        floor.ms.push_back(ms_between(t0, t1));

        Clock::time_point body_end{};
        open_nursery(root, [&](ActorNursery& an) {
            const auto s0 = Clock::now();
            Portal portal = an.start_actor("child", child_exe);
            const auto s1 = Clock::now();
            (void)portal.run("do_nothing", {}, 10s);
            const auto s2 = Clock::now();
            start.ms.push_back(ms_between(s0, s1));
            first_call.ms.push_back(ms_between(s1, s2));
            body_end = Clock::now();
        });
        leave.ms.push_back(ms_between(body_end, Clock::now()));
    }
    floor.print();
    start.print();
    first_call.print();
    leave.print();
    std::printf("start_actor_p50 / spawn_floor_p50 = %.2f\n",
                start.quantile(0.5) / floor.quantile(0.5));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t rounds = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100;
    const std::string exe = argc > 2 ? argv[2] : test::sibling_binary("../tests/nursery_child");
    try {
        return run(std::max<std::size_t>(rounds, 1), exe);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx_bench_nursery: %s\n", e.what());
        return 1;
    }
}
