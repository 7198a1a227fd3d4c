// ping_pong: two actors in two processes, first a one-shot RPC, then a context with a stream.
//
//   pinger (this process)                         ponger (a child process)
//   portal.run("add", 41)  ──── Start ─────────►  "add" returns 42: the context's Return
//   open_context("ping_pong", 2000)  ─ Start ──►  "ping_pong": started("ready to play")
//   body(ctx, first = "ready to play")            open_stream()
//     "ping 0"  ──────────── stream ───────────►  "pong 0" for each "ping 0", until the end
//     ...           ◄──────── stream ──────────   ...
//     close() ──── Stop ───────────────────────►  the loop ends; returns the count of pings
//   open_context returns {outcome = 2000}
//
// What to notice: a context is one task pair spanning two processes: the body here and the
// endpoint there start and end together, and the endpoint's return value comes back as the
// outcome. Messages travel through a ring in shared memory: the round trip is a few
// microseconds, no syscall on the fast path (compare a Release build with this Debug one).
//
// Usage: ping_pong [--ns NAMESPACE]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "example_process.hpp"
#include "shmctx/actor.hpp"

namespace {

using namespace std::chrono_literals;
using example::say;

constexpr std::int64_t kPings = 2000;

// The child process: an actor named "ponger" that serves two endpoints until the parent is done.
int run_ponger(const example::Args& cli) {
    shmctx::Actor ponger("ponger", shmctx::ActorOptions{.ns = cli.ns});

    // A plain function: args in, Return out; no started(), no stream.
    ponger.expose("add", [](shmctx::Context&, const shmctx::Payload& args) {
        return shmctx::Payload::value(args.value<std::int64_t>() + 1);
    });

    // A context with a stream: answer every "ping N" with "pong N" until the parent closes.
    ponger.expose("ping_pong", [](shmctx::Context& ctx, const shmctx::Payload& args) {
        say("asked to play %lld rounds", static_cast<long long>(args.value<std::int64_t>()));
        ctx.started(shmctx::Payload::value("ready to play"));  // the parent's `first`
        shmctx::MsgStream stream = ctx.open_stream();
        std::int64_t pings = 0;
        for (const shmctx::Message& msg : stream) {  // ends at the parent's close (Stop)
            const std::string pong = "pong" + std::string(msg.text().substr(4));
            stream.send(std::string_view(pong));
            ++pings;
        }
        say("the pinger closed the stream after %lld pings", static_cast<long long>(pings));
        return shmctx::Payload::value(pings);  // arrives as the parent's outcome
    });

    example::signal_ready();  // after the expose() calls: now the parent may open contexts
    example::wait_for_parent();
    return 0;  // ~Actor: closes its links and removes its shared-memory objects
}

// The parent process: the actor "pinger".
bool run_pinger(const example::Args& cli) {
    example::PeerProcess peer("ponger", cli);
    if (!peer.wait_ready(10s)) return false;
    bool ok = true;
    {
        shmctx::Actor pinger("pinger", shmctx::ActorOptions{.ns = cli.ns});
        shmctx::Portal portal = pinger.connect("ponger");

        // 1. One-shot RPC: Portal::run opens a context, waits for its Return and closes it.
        const auto answer = portal.run("add", shmctx::Payload::value(41)).value<std::int64_t>();
        say("run(\"add\", 41) returned %lld", static_cast<long long>(answer));
        ok = ok && answer == 42;

        // 2. A context: the body runs here while "ping_pong" runs in the ponger.
        auto result = portal.open_context(
            "ping_pong", shmctx::Payload::value(kPings),
            [&](shmctx::Context& ctx, const shmctx::Payload& first) {
                say("ponger started, saying \"%s\"", first.value<std::string>().c_str());
                shmctx::MsgStream stream = ctx.open_stream();
                std::vector<double> rtt_us;
                for (std::int64_t i = 0; i < kPings; ++i) {
                    const std::string ping = "ping " + std::to_string(i);
                    const auto t0 = std::chrono::steady_clock::now();
                    stream.send(std::string_view(ping));
                    const shmctx::Message pong = stream.receive();  // a view into the ring
                    rtt_us.push_back(std::chrono::duration<double, std::micro>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count());
                    if (pong.text() != "pong " + std::to_string(i)) {
                        say("ping %lld got \"%.*s\"", static_cast<long long>(i),
                            static_cast<int>(pong.text().size()), pong.text().data());
                        return false;
                    }
                }
                stream.close();  // Stop: the ponger's loop ends and it returns
                std::sort(rtt_us.begin(), rtt_us.end());
                say("%lld round trips: median %.1f us, p99 %.1f us", static_cast<long long>(kPings),
                    rtt_us[rtt_us.size() / 2], rtt_us[rtt_us.size() * 99 / 100]);
                return true;
            });
        // The body's own return value, and the ponger's Return (its error would have raised).
        const auto pings = result.outcome.value().value<std::int64_t>();
        say("the context ended: the ponger returned %lld", static_cast<long long>(pings));
        ok = ok && result.value == true && pings == kPings;
    }  // ~Actor: the pinger leaves the namespace
    return peer.finish(10s) && ok;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args cli = example::init(argc, argv, "ping_pong", "pinger");
    try {
        if (!cli.role.empty()) return run_ponger(cli);
        if (!run_pinger(cli)) return 1;
    } catch (const std::exception& e) {
        say("error: %s", e.what());
        return 1;
    }
    say("ping_pong OK: 42 from add(41), %lld pings answered in order",
        static_cast<long long>(kPings));
    return 0;
}
