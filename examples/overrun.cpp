// overrun: what a sender does when its receiver is slow: raise, spill or block.
//
// A stream direction is a ring in the receiver's shared memory holding msg_buffer_size messages.
// The sender finds it full when the receiver falls behind; then, by policy:
//
//   1. raise (default)  send() throws StreamOverrun: the message is not sent (tractor's rule).
//   2. spill            the RECEIVER declared allow_overruns ("I may fall behind, do not fail"):
//                       send() queues the message in the sender's spill, and the sender's drainer
//                       moves it into the ring as room appears. Nothing lost, order kept; close()
//                       flushes the spill before the Stop. The spill is capped (spill_cap_*).
//   3. block            the SENDER chose StreamOptions::on_full = block: send() waits for room
//                       (cancellably, up to block_timeout if set).
//
//   producer (this process)                      consumer (a child process), ring of 16 messages
//   open_context("consume" / "consume_spill")    started(), open_stream()
//   send 0, 1, 2, ... as fast as it can   ────►  waits until the sender has found its ring full
//                                                (a shared counter), then reads everything
//
// What to notice: the counters (outbound_counters(): shared-memory words that `shmctx ls` reads
// too) show where each message went: straight into the ring, spilled then drained, or waited.
//
// Usage: overrun [--ns NAMESPACE]
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <exception>
#include <stdexcept>

#include "example_process.hpp"
#include "shmctx/actor.hpp"

namespace {

using namespace std::chrono_literals;
using example::say;

constexpr std::uint32_t kRing = 16;       // the consumer's inbound ring, in messages
constexpr std::int64_t kMessages = 1000;  // what the producer tries to send in each phase

// The slow consumer: reads nothing until the producer has hit the full ring, then everything.
shmctx::Payload consume(shmctx::Context& ctx, const shmctx::Payload&) {
    ctx.started();
    shmctx::MsgStream stream = ctx.open_stream();
    // Slowness on demand: full_events is the producer's counter of pushes that found our ring
    // full, read from here through shared memory. (A real consumer would just be busy.)
    const shmctx::Deadline limit(10s);
    while (stream.inbound_counters().full_events == 0) {
        if (limit.expired()) throw std::runtime_error("the producer never filled the ring");
        ctx.sleep_for(1ms);
    }
    std::int64_t n = 0;
    for (const shmctx::Message& msg : stream) {
        if (msg.value<std::int64_t>() != n) throw std::runtime_error("a message out of order");
        ++n;
    }
    say("read %" PRId64 " messages, in order", n);
    return shmctx::Payload::value(n);
}

int run_consumer(const example::Args& cli) {
    shmctx::Actor consumer("consumer", shmctx::ActorOptions{.ns = cli.ns});
    shmctx::ExposeOptions strict;  // overruns are the sender's error (the default)
    strict.msg_buffer_size = kRing;
    consumer.expose("consume", consume, strict);
    shmctx::ExposeOptions lenient = strict;
    lenient.allow_overruns = true;  // the receiver's declaration: "spill, do not fail"
    consumer.expose("consume_spill", consume, lenient);
    example::signal_ready();
    example::wait_for_parent();
    return 0;
}

void print(const shmctx::shm::RingCounters& c) {
    say("   counters: sent %" PRIu64 ", found full %" PRIu64 ", overruns %" PRIu64
        ", spilled %" PRIu64 ", drained %" PRIu64 ", discarded %" PRIu64
        ", spill high water %" PRIu64,
        c.sent, c.full_events, c.overruns, c.spilled, c.spill_drained, c.spill_discarded,
        c.spill_high_water);
}

bool run_producer(const example::Args& cli) {
    example::PeerProcess peer("consumer", cli);
    if (!peer.wait_ready(10s)) return false;
    shmctx::Actor producer("producer", shmctx::ActorOptions{.ns = cli.ns});
    shmctx::Portal portal = producer.connect("consumer");
    shmctx::shm::RingCounters c;

    say("1. raise: the consumer does not allow overruns; default on_full = raise");
    std::int64_t sent = 0;
    auto raise =
        portal.open_context("consume", {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
            shmctx::MsgStream stream = ctx.open_stream();
            try {
                for (; sent < kMessages; ++sent) stream.send(shmctx::Payload::value(sent));
            } catch (const shmctx::StreamOverrun& e) {
                say("   StreamOverrun on message %" PRId64 ": %s", sent, e.what());
            }
            c = stream.outbound_counters();
        });  // the body ends normally: the consumer reads the messages sent before the overrun
    print(c);
    const bool raised = sent == std::int64_t{kRing} && c.overruns == 1 &&
                        raise.outcome.value().value<std::int64_t>() == std::int64_t{kRing};

    say("2. spill: the consumer declared allow_overruns");
    auto spill =
        portal.open_context("consume_spill", {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
            shmctx::MsgStream stream = ctx.open_stream();
            for (std::int64_t i = 0; i < kMessages; ++i) stream.send(shmctx::Payload::value(i));
            say("   all %" PRId64 " sends returned; %" PRIu64 " messages wait in our spill",
                kMessages, stream.outbound_counters().spill_depth());
            stream.close();  // returns once the spill is flushed into the ring, then sends the Stop
            // The drainer bumps its counter just after it publishes: give it a moment to catch up.
            const shmctx::Deadline limit(5s);
            while ((c = stream.outbound_counters()).spill_depth() != 0 && !limit.expired()) {
                ctx.sleep_for(1ms);
            }
        });
    print(c);
    const bool spilled = spill.outcome.value().value<std::int64_t>() == kMessages &&
                         c.spilled > 0 && c.spill_drained == c.spilled && c.spill_discarded == 0 &&
                         c.overruns == 0;

    say("3. block: the consumer does not allow overruns; our on_full = block");
    shmctx::StreamOptions blocking;
    blocking.on_full = shmctx::OnFull::block;  // blocking.block_timeout would bound each wait
    auto block =
        portal.open_context("consume", {}, [&](shmctx::Context& ctx, const shmctx::Payload&) {
            shmctx::MsgStream stream = ctx.open_stream(blocking);
            for (std::int64_t i = 0; i < kMessages; ++i) stream.send(shmctx::Payload::value(i));
            c = stream.outbound_counters();
        });
    print(c);
    const bool blocked = block.outcome.value().value<std::int64_t>() == kMessages &&
                         c.full_events > 0 && c.overruns == 0 && c.spilled == 0;

    return peer.finish(10s) && raised && spilled && blocked;
}

}  // namespace

int main(int argc, char** argv) {
    const example::Args cli = example::init(argc, argv, "overrun", "producer");
    try {
        if (!cli.role.empty()) return run_consumer(cli);
        if (!run_producer(cli)) return 1;
    } catch (const std::exception& e) {
        say("error: %s", e.what());
        return 1;
    }
    say("overrun OK: raised after %u, spilled and drained %" PRId64
        " with no loss, blocked for %" PRId64,
        kRing, kMessages, kMessages);
    return 0;
}
