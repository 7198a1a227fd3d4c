// stream_fanout: one context stream, several reader threads in the receiving process.
//
//   feed (a child process)                       desk (this process)
//   "ticks": started(), open_stream()            body: stream = ctx.open_stream()
//     send Tick 0..4999 (FlatBuffers)   ──────►    sub[i] = stream.subscribe()   i = 0, 1, 2
//     (on_full = block: waits while the            reader thread i: for (Payload& p : sub[i])
//      desk's ring is full)                          checks p.as<Tick>()->seq() = 0, 1, 2, ...
//     close() ─── Stop ───────────────────►        each reader's loop ends at the Stop
//   returns 5000                                 the body joins the readers; outcome 5000
//
// A MsgStream has one receiving thread. subscribe() puts a fan-out buffer in front of it: every
// Subscription gets every message, in stream order, each on its own thread. There is no extra
// thread: whichever subscriber finds the buffer empty takes the next message from the ring for
// everybody. What to notice: each reader prints the same count and checksum, with 0 lost.
//
// Usage: stream_fanout [--ns NAMESPACE]
#include <cinttypes>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "example_process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/example_tick_generated.h"  // flatc output of examples/example_tick.fbs
#include "shmctx/subscription.hpp"

// Payload::as<Tick>() checks the file identifier the schema declares.
SHMCTX_ROOT_TYPE(shmctx::examples::Tick, "TICK");

namespace {

using namespace std::chrono_literals;
using example::say;
using shmctx::examples::Tick;

constexpr std::uint64_t kTicks = 5000;
constexpr std::size_t kReaders = 3;

int run_feed(const example::Args& cli) {
    shmctx::Actor feed("feed", shmctx::ActorOptions{.ns = cli.ns});
    feed.expose("ticks", [](shmctx::Context& ctx, const shmctx::Payload& args) {
        const auto count = args.value<std::uint64_t>();
        ctx.started();
        // The desk does not allow overruns; wait for room rather than fail (see overrun.cpp).
        shmctx::StreamOptions options;
        options.on_full = shmctx::OnFull::block;
        shmctx::MsgStream stream = ctx.open_stream(options);
        flatbuffers::FlatBufferBuilder fbb(128);
        for (std::uint64_t seq = 0; seq < count; ++seq) {
            fbb.Clear();
            const double mid = 100.0 + static_cast<double>(seq % 100) * 0.01;
            fbb.Finish(
                shmctx::examples::CreateTick(fbb, seq, 7, mid - 0.005, mid + 0.005, 100, 200),
                "TICK");
            stream.send(fbb);  // copied into the desk's ring; fbb is reusable at once
        }
        stream.close();  // Stop: after the last tick, the desk's readers see the end
        say("sent %" PRIu64 " ticks", count);
        return shmctx::Payload::value(count);
    });
    example::signal_ready();
    example::wait_for_parent();
    return 0;
}

struct ReaderResult {
    std::uint64_t ticks = 0;
    std::uint64_t out_of_order = 0;
    std::uint64_t lost = 0;
    double bid_sum = 0;
    std::string error;  // what ended the reader early, if anything did
};

// One reader thread: every tick of the stream, in order, until the feed's Stop.
void read_ticks(shmctx::Subscription& sub, ReaderResult& r) {
    for (;;) {
        try {
            for (const shmctx::Payload& p : sub) {  // ends at EndOfChannel without throwing
                const Tick* tick = p.as<Tick>();    // verified FlatBuffer, identifier "TICK"
                if (tick->seq() != r.ticks + r.lost) ++r.out_of_order;
                r.bid_sum += tick->bid();
                ++r.ticks;
            }
            return;
        } catch (const shmctx::Lagged& e) {
            // This reader fell more than the buffer's capacity behind: the oldest ticks it had
            // not read were overwritten. It continues with the oldest one still buffered.
            r.lost += e.missed();
        } catch (const std::exception& e) {  // the context's error, or a tick failing to verify
            r.error = e.what();
            return;
        }
    }
}

// The context's body: one stream, kReaders subscriptions, a thread reading each.
void fan_out(shmctx::Context& ctx, std::vector<ReaderResult>& results) {
    shmctx::MsgStream stream = ctx.open_stream();
    // A subscription gets what arrives after it subscribed: subscribe everybody before anyone
    // reads. The buffer keeps the latest `capacity` ticks; a reader further behind loses the
    // oldest (Lagged). Here it holds the whole run, so no reader can lose a tick however the
    // threads are scheduled.
    std::vector<shmctx::Subscription> subs;
    for (std::size_t i = 0; i < kReaders; ++i) subs.push_back(stream.subscribe({.capacity = 8192}));
    std::vector<std::jthread> readers;
    for (std::size_t i = 0; i < kReaders; ++i) {
        readers.emplace_back(read_ticks, std::ref(subs[i]), std::ref(results[i]));
    }
}  // the readers are joined first (declared last), then the subscriptions and the stream go

bool run_desk(const example::Args& cli) {
    example::PeerProcess peer("feed", cli);
    if (!peer.wait_ready(10s)) return false;
    std::vector<ReaderResult> results(kReaders);
    bool ok = true;
    {
        shmctx::Actor desk("desk", shmctx::ActorOptions{.ns = cli.ns});
        shmctx::Portal portal = desk.connect("feed");
        auto r = portal.open_context(
            "ticks", shmctx::Payload::value(kTicks),
            [&](shmctx::Context& ctx, const shmctx::Payload&) { fan_out(ctx, results); });
        const auto sent = r.outcome.value().value<std::uint64_t>();
        say("the feed returned %" PRIu64, sent);
        ok = sent == kTicks;
    }
    for (std::size_t i = 0; i < kReaders; ++i) {
        const ReaderResult& r = results[i];
        say("reader %zu: %" PRIu64 " ticks, %" PRIu64 " out of order, %" PRIu64
            " lost, bid checksum %.2f %s",
            i, r.ticks, r.out_of_order, r.lost, r.bid_sum, r.error.c_str());
        ok = ok && r.ticks == kTicks && r.out_of_order == 0 && r.lost == 0 && r.error.empty() &&
             r.bid_sum == results[0].bid_sum;
    }
    return peer.finish(10s) && ok;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args cli = example::init(argc, argv, "stream_fanout", "desk");
    try {
        if (!cli.role.empty()) return run_feed(cli);
        if (!run_desk(cli)) return 1;
    } catch (const std::exception& e) {
        say("error: %s", e.what());
        return 1;
    }
    say("stream_fanout OK: %zu readers each got all %" PRIu64 " ticks in order", kReaders, kTicks);
    return 0;
}
