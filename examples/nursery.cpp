// nursery: a supervisor process runs worker actors as child processes, structured like a
// trio/tractor nursery: every child it starts is gone (cancelled, exited, reaped) when the
// nursery block ends, whatever happens inside it.
//
// One executable plays both roles: started with --worker it is a child actor, whose whole main is
// shmctx::run_actor (claim the actor, expose endpoints, serve until cancelled; SIGINT/SIGTERM
// cancel it too). Otherwise it is the supervisor, which shows three things:
//   1. run_in_actor: two children each compute a sum; the nursery's end waits for both results,
//      and a long-lived child started with start_actor is cancelled and reaped at the end;
//   2. a child's error arrives as a RemoteActorError naming its original type and its actor;
//   3. a nursery deadline cancels a child that would stream forever.
//
// Usage: nursery [--ns NAMESPACE]
#include "shmctx/nursery.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/actor.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/run_actor.hpp"

namespace {

using namespace std::chrono_literals;
using shmctx::Context;
using shmctx::Payload;

// ---- the child actor: its endpoints ----
void expose_worker(shmctx::Actor& actor) {
    // sum(n) = 1 + 2 + ... + n: a stand-in for real work done in another process.
    actor.expose("sum", [](Context&, const Payload& args) {
        const auto n = args.value<std::int64_t>();
        std::int64_t total = 0;
        for (std::int64_t i = 1; i <= n; ++i) total += i;
        return Payload::value(total);
    });
    // A child that fails: the parent sees std::invalid_argument, boxed.
    actor.expose("parse", [](Context&, const Payload& args) -> Payload {
        throw std::invalid_argument("cannot parse \"" + args.value<std::string>() + "\"");
    });
    // Streams prices until it is cancelled (ctx.sleep_for is a cancellation point).
    actor.expose("prices", [](Context& ctx, const Payload&) {
        ctx.started();
        auto stream = ctx.open_stream();
        for (std::int64_t px = 10000;; ++px) {
            stream.send(Payload::value(px).view());
            ctx.sleep_for(10ms);
        }
        return Payload{};
    });
}

std::string self_exe() {
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string_view(argv[1]) == "--worker") {
        return shmctx::run_actor("worker", expose_worker);  // a nursery names each child
    }
    std::string ns = "example-nursery-" + std::to_string(::getpid());
    if (argc > 2 && std::string_view(argv[1]) == "--ns") ns = argv[2];
    const std::string exe = self_exe();
    const std::vector<std::string> worker = {"--worker"};

    shmctx::ActorOptions options;
    options.ns = ns;
    shmctx::Actor supervisor("supervisor", options);
    int checks = 0;

    // 1. Results of run_in_actor children; a long-lived child cancelled at the end.
    shmctx::open_nursery(supervisor, [&](shmctx::ActorNursery& an) {
        shmctx::Portal daemon = an.start_actor("daemon", exe, worker);
        auto a = an.run_in_actor("sum-a", exe, "sum", Payload::value(1000).view(), worker);
        auto b = an.run_in_actor("sum-b", exe, "sum", Payload::value(2000).view(), worker);
        std::printf("children running: %zu (pids", an.running_children());
        for (pid_t p : an.child_pids()) std::printf(" %d", static_cast<int>(p));
        std::printf(")\n");
        const auto sa = a.get().value<std::int64_t>();
        const auto sb = b.get().value<std::int64_t>();
        std::printf("sum-a = %lld, sum-b = %lld (computed in pids %d and %d)\n",
                    static_cast<long long>(sa), static_cast<long long>(sb),
                    static_cast<int>(a.pid()), static_cast<int>(b.pid()));
        if (sa == 500500 && sb == 2001000) ++checks;
        // The daemon still serves; leaving the block cancels it (canceller: supervisor).
        (void)daemon.run("sum", Payload::value(10).view());
    });
    std::printf("nursery 1 closed: every child reaped\n");

    // 2. A child's error, typed.
    try {
        shmctx::open_nursery(supervisor, [&](shmctx::ActorNursery& an) {
            (void)an.run_in_actor("parser", exe, "parse", Payload::value("12x").view(), worker);
        });
    } catch (const shmctx::RemoteActorError& e) {
        std::printf("caught from %s: %s (boxed type %s)\n", e.src_uid().to_string().c_str(),
                    e.message().c_str(), e.boxed_type_name().c_str());
        if (e.boxed_is<std::invalid_argument>()) ++checks;
    }

    // 3. A deadline on the nursery ends an infinite stream; the nursery absorbs its own cancel.
    shmctx::NurseryOptions limited;
    limited.deadline = shmctx::Deadline(300ms);
    std::int64_t prices = 0;
    const auto r = shmctx::open_nursery(
        supervisor,
        [&](shmctx::ActorNursery& an) {
            shmctx::Portal feed = an.start_actor("feed", exe, worker);
            (void)feed.open_context("prices", {}, [&](Context& ctx, const Payload&) {
                auto stream = ctx.open_stream();
                for (auto& msg : stream) {
                    (void)msg;
                    ++prices;
                }
            });
        },
        limited);
    std::printf("deadline: %lld prices received, cancelled_caught = %s\n",
                static_cast<long long>(prices), r.cancelled_caught ? "true" : "false");
    if (r.cancelled_caught && prices > 0) ++checks;

    if (checks != 3) {
        std::printf("nursery FAILED: %d of 3 checks passed\n", checks);
        return 1;
    }
    std::printf("nursery OK: 2 results, 1 typed remote error, 1 stream cut by the deadline\n");
    return 0;
}
