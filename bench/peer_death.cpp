// A killed peer as a user sees it (issue 7's bar): how long after SIGKILL of a peer process a
// thread of ours blocked in receive() on a context with it wakes with PeerDied, how long until
// the dead actor's objects are reclaimed (by us, the survivor), and how long a new process of the
// same name takes to be ready (spawn to "ready", its name claimed at once).
//
//   shmctx_bench_peer_death [kills=100] [path/to/actor_node]
//
// Each round spawns the tests' actor_node helper as "victim" (tests/actor_node next to bench/),
// connects, opens its "hold" endpoint and blocks in receive(); another thread waits until that
// thread sleeps in the kernel, takes the time and SIGKILLs the victim. Prints p50/p90/max in ms
// for each of the three and exits 1 if a round fails (no PeerDied, objects left after 5 s).
// shmctx_bench_death measures the liveness watcher alone.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "latency_series.hpp"
#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"

using namespace shmctx;
using namespace std::chrono_literals;

namespace {

using bench::LatencySeries;
using bench::ms_between;

int run(std::size_t kills, const std::string& node) {
    test::NamespaceGuard guard("bench-peer-death");
    ActorOptions options;
    options.ns = guard.names.ns();
    Actor survivor("survivor", options);
    const std::vector<std::string> baseline = test::all_objects(guard.names);
    LatencySeries woke{"kill_to_PeerDied", {}};
    LatencySeries reclaimed{"kill_to_reclaimed", {}};
    LatencySeries restarted{"restart_spawn_to_ready", {}};

    const auto spawn_ready = [&](LatencySeries* timed) {
        const auto start = Clock::now();
        test::Child child = test::spawn(node, {guard.names.ns(), "victim", "server"});
        if (!child.expect_line("ready", 10s)) {
            throw std::runtime_error("actor_node did not start: " + child.describe());
        }
        if (timed != nullptr) timed->ms.push_back(ms_between(start, Clock::now()));
        return child;
    };

    test::Child victim = spawn_ready(nullptr);
    for (std::size_t i = 0; i < kills; ++i) {
        Portal portal = survivor.connect("victim", 5s);
        std::atomic<pid_t> receiver{0};
        Clock::time_point killed_at{};
        std::jthread killer([&] {
            (void)test::wait_until(
                [&] {
                    const pid_t tid = receiver.load();
                    return tid != 0 && test::thread_state(tid) == 'S';
                },
                5s);
            killed_at = Clock::now();
            victim.kill(SIGKILL);
        });
        Clock::time_point woke_at{};
        try {
            portal.open_context("hold", {}, [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                receiver = test::current_tid();
                (void)stream.receive();
            });
            std::fprintf(stderr, "round %zu: open_context returned\n", i);
            return 1;
        } catch (const PeerDied&) {
            woke_at = Clock::now();
        }
        killer.join();
        (void)victim.wait(5s);
        woke.ms.push_back(ms_between(killed_at, woke_at));
        if (!test::wait_until([&] { return test::all_objects(guard.names) == baseline; }, 5s)) {
            std::fprintf(stderr, "round %zu: the dead actor's objects were not reclaimed\n", i);
            return 1;
        }
        reclaimed.ms.push_back(ms_between(killed_at, Clock::now()));
        victim = spawn_ready(&restarted);
    }
    victim.write("quit\n");
    (void)victim.wait(5s);
    woke.print(22);
    reclaimed.print(22);
    restarted.print(22);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::size_t kills = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100;
        const std::string node = argc > 2 ? argv[2] : test::sibling_binary("../tests/actor_node");
        return run(kills == 0 ? 100 : kills, node);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx_bench_peer_death: %s\n", e.what());
        return 1;
    }
}
