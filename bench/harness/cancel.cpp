// The cancel test and the cancel server (cancel.hpp; bench/README.md §7).
#include "cancel.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "actor_server.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"

namespace shmctx::bench {
namespace {

/// Bytes of each message that fills a ring in park_full (both directions).
constexpr std::size_t kFillBytes = 64;

}  // namespace

Payload successor(const Payload& in) {
    const auto v = in.value<std::int64_t>();
    if (v == std::numeric_limits<std::int64_t>::max())
        throw std::out_of_range("echo: argument has no successor");
    return Payload::value(v + 1);
}

Clock::duration context_round_trip_once(Portal& portal, std::int64_t tag) {
    const Payload args = Payload::value(tag);
    const auto t0 = Clock::now();
    auto r = portal.open_context(kEchoEndpoint, args, [tag](Context&, const Payload& first) {
        return first.value<std::int64_t>() == tag ? 0 : 1;
    });
    const auto t1 = Clock::now();
    if (!r.value || *r.value != 0)
        throw CheckFailed("open_context: started value is not the argument " + std::to_string(tag));
    const std::int64_t got = r.outcome.value().value<std::int64_t>();  // rethrows a remote error
    if (got != tag + 1)
        throw CheckFailed("open_context: result " + std::to_string(got) + ", expected " +
                          std::to_string(tag + 1));
    return t1 - t0;
}

void expose_cancel_endpoints(Actor& actor) {
    actor.expose(std::string(kEchoEndpoint), [](Context& ctx, const Payload& in) {
        const Payload out = successor(in);
        ctx.started(in);
        return out;
    });
    actor.expose(std::string(kParkEndpoint), [](Context& ctx, const Payload& in) -> Payload {
        ctx.started(in);
        MsgStream stream = ctx.open_stream();
        (void)stream.receive();  // nothing is ever sent: only the parent's cancel ends this
        throw std::logic_error("park: received a message nobody sent");
    });
    actor.expose(std::string(kParkFullEndpoint), [](Context& ctx, const Payload& in) -> Payload {
        ctx.started(in);
        StreamOptions options;
        options.on_full = OnFull::block;
        MsgStream stream = ctx.open_stream(options);
        const std::array<std::byte, kFillBytes> bytes{};
        const PayloadView message{std::span<const std::byte>(bytes)};
        for (;;) {
            const SendStatus s = stream.try_send(message);
            if (s == SendStatus::full) break;
            if (s == SendStatus::cancelled) ctx.checkpoint();  // throws Cancelled
            if (s != SendStatus::ok) {
                throw std::runtime_error("park_full: try_send returned " +
                                         std::string(to_string(s)));
            }
        }
        // The parent never reads: this blocks (full_events moves a second time,
        // which the parent waits for) until the cancel.
        stream.send(message);
        throw std::logic_error("park_full: a send into a full ring returned");
    });
}

/// All counters of a ring, for a failed check's message.
std::string describe(const shm::RingCounters& c) {
    return "sent " + std::to_string(c.sent) + ", received " + std::to_string(c.received) +
           ", payload bytes " + std::to_string(c.payload_bytes) + ", full events " +
           std::to_string(c.full_events) + ", overruns " + std::to_string(c.overruns) +
           ", spilled " + std::to_string(c.spilled);
}

/// Waits until the child of a park_full context has filled our inbound ring and blocks in
/// send(), after we filled its inbound ring: both data rings full, nobody reading. The child's
/// try_send that found our ring full counts one full event of that ring, its blocking send()'s
/// first attempt a second, so two mean it is in send() (or about to wait in it). Polls the
/// ring's counters (no sleep); CheckFailed after `stall`, the child's error as soon as it is
/// recorded.
void fill_both_rings(Context& ctx, MsgStream& stream, Duration stall) {
    const std::array<std::byte, kFillBytes> bytes{};
    const PayloadView message{std::span<const std::byte>(bytes)};
    std::size_t sent = 0;
    SendStatus s = SendStatus::ok;
    while ((s = stream.try_send(message)) == SendStatus::ok) ++sent;
    if (s != SendStatus::full || sent == 0) {
        throw CheckFailed("park_full: the parent's try_send returned " + std::string(to_string(s)) +
                          " after " + std::to_string(sent) +
                          " messages, expected full after at least one");
    }
    const Deadline deadline(stall);
    for (;;) {
        // The counters are separate words read one after the other (ring.hpp: a snapshot may
        // be stale), and this thread may be descheduled between two reads: one snapshot can
        // show the child's full events but not yet its messages. So `sent` is part of the
        // condition, not asserted from the same snapshot; a ring that never shows both fails at
        // the deadline below.
        const shm::RingCounters in = stream.inbound_counters();
        if (in.full_events >= 2 && in.sent != 0) {
            if (in.received != 0) {
                throw CheckFailed("park_full: our inbound ring says " + describe(in) +
                                  "; expected a full ring nobody read");
            }
            return;
        }
        if (const std::exception_ptr e = ctx.remote_error()) std::rethrow_exception(e);
        if (deadline.expired()) {
            throw CheckFailed(
                "park_full: the child did not fill our inbound ring and block in send() within "
                "the stall limit (our inbound ring: " +
                describe(in) + "; our outbound ring: " + describe(stream.outbound_counters()) +
                ")");
        }
        std::this_thread::yield();  // the child's threads may share our CPU (free placement)
    }
}

/// One cancel of a parked child: open_context on "park" or (`full`) "park_full"; in the body,
/// for park_full both data rings are filled first (fill_both_rings), then `cancel_after` passes
/// and ctx.cancel() is timed alone. Checks the started value, that the cancel was acknowledged
/// (the ctxc recorded when cancel() returned) and that open_context absorbed it. Returns the
/// cancel's latency.
Clock::duration cancel_once(Portal& portal, bool full, std::int64_t tag, Duration stall,
                            Duration cancel_after) {
    const Payload args = Payload::value(tag);
    Clock::duration latency{};
    bool acked = false;
    const char* what = full ? "cancel (park_full)" : "cancel (park)";
    auto r = portal.open_context(
        full ? kParkFullEndpoint : kParkEndpoint, args, [&](Context& ctx, const Payload& first) {
            if (first.value<std::int64_t>() != tag) {
                throw CheckFailed(std::string(what) + ": started value is not the argument " +
                                  std::to_string(tag));
            }
            std::optional<MsgStream> stream;
            if (full) {
                stream.emplace(ctx.open_stream());
                fill_both_rings(ctx, *stream, stall);
            }
            if (cancel_after > Duration::zero()) std::this_thread::sleep_for(cancel_after);
            const auto t0 = Clock::now();
            ctx.cancel();
            const auto t1 = Clock::now();
            latency = t1 - t0;
            acked = ctx.cancel_acked();
        });
    if (!acked) {
        throw CheckFailed(std::string(what) +
                          ": cancel() returned without the child's ContextCancelled recorded");
    }
    if (!r.outcome.is_absorbed_cancel()) {
        r.outcome.rethrow_if_error();
        throw CheckFailed(std::string(what) +
                          ": open_context did not return our own cancel as absorbed");
    }
    return latency;
}

int cancel_server_main(std::span<const std::string_view> args) {
    return actor_server_main(args, "cancel server", expose_cancel_endpoints);
}

CancelResult run_cancel(const CancelOptions& options, const std::string& ns,
                        std::ostream& progress) {
    CancelResult result;
    result.options = options;
    with_actor_server(
        kCancelServerRole, ns, ActorOptions{}.data_ring_bytes, progress,
        [&](Portal& portal) {
            std::int64_t tag = 0;
            {
                for (std::size_t i = 0; i < options.warmup; ++i)
                    (void)context_round_trip_once(portal, tag++);
                std::vector<std::uint32_t> samples;
                samples.reserve(options.iterations);
                for (std::size_t i = 0; i < options.iterations; ++i)
                    samples.push_back(saturated_ns(context_round_trip_once(portal, tag++)));
                result.context = percentiles_of(samples);
                progress << "context round trip: p50 " << format_ns(result.context.p50) << "\n"
                         << std::flush;
            }
            for (const bool full : {false, true}) {
                for (std::size_t i = 0; i < options.warmup; ++i)
                    (void)cancel_once(portal, full, tag++, options.stall, options.cancel_after);
                std::vector<std::uint32_t> samples;
                samples.reserve(options.iterations);
                for (std::size_t i = 0; i < options.iterations; ++i)
                    samples.push_back(saturated_ns(
                        cancel_once(portal, full, tag++, options.stall, options.cancel_after)));
                RoundTripRun& r = full ? result.full : result.park;
                r = percentiles_of(samples);
                progress << "cancel (" << (full ? "full" : "park") << "): p50 " << format_ns(r.p50)
                         << "\n"
                         << std::flush;
            }
        },
        options.client_cpu, options.server_cpu);
    return result;
}

}  // namespace shmctx::bench
