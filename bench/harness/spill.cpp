// The spill test and the stream server (spill.hpp; bench/README.md §6).
#include "spill.hpp"

#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "actor_server.hpp"
#include "process.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"

namespace shmctx::bench {
namespace {

/// The drainer thread of the actor runtime (its comm name).
constexpr std::string_view kDrainerThread = "shmctx-drain";

std::uint64_t seq_of(std::span<const std::byte> bytes) {
    std::uint64_t seq = 0;
    if (bytes.size() >= sizeof seq) std::memcpy(&seq, bytes.data(), sizeof seq);
    return seq;
}

void busy_wait(Clock::time_point until) {
    while (Clock::now() < until) {
    }
}

/// "sink": see SinkArgs. A pool thread runs it: a pinned one gets its mask back afterwards
/// (the next context may run on it).
Payload sink(Context& ctx, const Payload& in) {
    const SinkArgs args = SinkArgs::decode(in.value<std::string>());
    const AffinityScope pinned(args.cpu);  // this thread; no-op for -1
    ctx.started();
    MsgStream stream = ctx.open_stream();
    std::uint64_t next = 0;
    Clock::time_point fast_start = Clock::now();
    while (next < args.count) {
        (void)stream.drain(
            [&](const Message& m) {
                const std::uint64_t seq = seq_of(m.bytes());
                if (seq != next || m.bytes().size() != args.msg_bytes) {
                    throw std::runtime_error("sink: expected message " + std::to_string(next) +
                                             " of " + std::to_string(args.msg_bytes) +
                                             " bytes, got " + std::to_string(seq) + " of " +
                                             std::to_string(m.bytes().size()));
                }
                ++next;
                if (next <= args.slow_count) {
                    busy_wait(Clock::now() + std::chrono::nanoseconds(args.slow_ns));
                    if (next == args.slow_count) fast_start = Clock::now();
                }
            },
            // A slow consumer takes one message per call, so each is released (and its slot
            // refilled by the producer) as soon as it is done; at full speed, batches.
            next < args.slow_count ? 1 : 256);
    }
    const auto fast_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - fast_start).count();
    return Payload::value(std::to_string(fast_ns) + " " + std::to_string(next));
}

/// "/proc/self/task/<tid>" of this process's thread named `comm`, or empty.
std::string thread_dir(std::string_view comm) {
    DIR* dir = ::opendir("/proc/self/task");
    if (dir == nullptr) return {};
    std::string found;
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.') continue;
        const std::string base = std::string("/proc/self/task/") + e->d_name;
        std::ifstream c(base + "/comm");
        std::string name;
        std::getline(c, name);
        if (name == comm) found = base;
    }
    ::closedir(dir);
    return found;
}

SpillSample sample(Clock::time_point t0, const MsgStream& stream) {
    return {std::chrono::duration<double, std::milli>(Clock::now() - t0).count(),
            stream.outbound_counters().spill_depth()};
}

}  // namespace

std::string SinkArgs::encode() const {
    return std::to_string(count) + " " + std::to_string(slow_ns) + " " +
           std::to_string(slow_count) + " " + std::to_string(cpu) + " " + std::to_string(msg_bytes);
}

SinkArgs SinkArgs::decode(const std::string& text) {
    SinkArgs a;
    std::istringstream in(text);
    in >> a.count >> a.slow_ns >> a.slow_count >> a.cpu >> a.msg_bytes;
    if (!in || a.msg_bytes < sizeof(std::uint64_t))
        throw std::invalid_argument("sink: bad arguments \"" + text + "\"");
    return a;
}

void stamp_sequence(std::span<std::byte> message, std::uint64_t seq) {
    if (message.size() < sizeof seq) throw std::invalid_argument("message shorter than 8 bytes");
    std::memcpy(message.data(), &seq, sizeof seq);
}

void expose_sink_endpoints(Actor& actor) {
    // Throughput: a message capacity the bytes limit reaches first (as the raw ring).
    actor.expose(std::string(kSinkEndpoint), sink, ExposeOptions{1U << 20, false});
    // Spill: the default 64-message ring, and the peer may overrun us.
    actor.expose(std::string(kSinkOverrunEndpoint), sink, ExposeOptions{0, true});
    // Overrun: the default 64-message ring under the default policy.
    actor.expose(std::string(kSinkRaiseEndpoint), sink, ExposeOptions{0, false});
}

int stream_server_main(std::span<const std::string_view> args) {
    return actor_server_main(args, "stream server", expose_sink_endpoints);
}

void overrun_run(Portal& portal, const SpillOptions& o, SpillResult& f) {
    const auto limit = static_cast<std::uint64_t>(
        std::max(1.0, o.producer_rate * std::chrono::duration<double>(o.duration).count()));
    SinkArgs args;
    args.count = limit;
    args.slow_count = limit;
    args.slow_ns = static_cast<std::uint64_t>(1e9 / o.slow_rate());
    args.msg_bytes = o.msg_bytes;
    std::vector<std::byte> m(o.msg_bytes);
    bool raised = false;
    auto r = portal.open_context(
        kSinkRaiseEndpoint, Payload::value(args.encode()).view(),
        [&](Context& ctx, const Payload&) {
            MsgStream stream = ctx.open_stream();  // on_full = raise: the default policy
            const auto period = std::chrono::duration<double>(1.0 / o.producer_rate);
            const auto t0 = Clock::now();
            std::uint64_t i = 0;
            try {
                for (; i < limit; ++i) {
                    busy_wait(t0 + std::chrono::duration_cast<Clock::duration>(period * i));
                    stamp_sequence(m, i);
                    stream.send(PayloadView(std::span<const std::byte>(m)));
                }
            } catch (const StreamOverrun& e) {
                raised = true;
                f.overrun_what = e.what();
            }
            f.overrun_after = i;
            // The consumer still waits for `limit` messages: end the context.
            ctx.cancel();
        });
    if (!r.outcome.is_absorbed_cancel()) {
        r.outcome.rethrow_if_error();
        throw CheckFailed("overrun: open_context did not return our own cancel as absorbed");
    }
    if (!raised) {
        f.overrun_what =
            "no StreamOverrun within " + std::to_string(limit) + " messages: the consumer kept up";
    }
}

void spill_run(Portal& portal, const SpillOptions& o, SpillResult& f) {
    f.options = o;
    const auto total = static_cast<std::uint64_t>(
        std::max(1.0, o.producer_rate * std::chrono::duration<double>(o.duration).count()));
    SinkArgs args;
    args.count = total;
    // What the slow consumer reads while the producer runs; then it is fast.
    args.slow_count = std::min<std::uint64_t>(
        total, static_cast<std::uint64_t>(o.slow_rate() *
                                          std::chrono::duration<double>(o.duration).count()));
    args.slow_ns = static_cast<std::uint64_t>(1e9 / o.slow_rate());
    args.msg_bytes = o.msg_bytes;
    std::vector<std::uint32_t> spilling;
    std::vector<std::uint32_t> all;
    spilling.reserve(total);
    all.reserve(total);
    std::vector<std::byte> m(o.msg_bytes);
    std::string reply;
    auto result = portal.open_context(
        kSinkOverrunEndpoint, Payload::value(args.encode()).view(),
        [&](Context& ctx, const Payload&) {
            StreamOptions so;
            so.spill_cap_msgs = total + 1;  // the test is about the spill, not its cap
            so.spill_cap_bytes = (total + 1) * std::max<std::uint64_t>(o.msg_bytes, 64);
            MsgStream stream = ctx.open_stream(so);
            const auto period = std::chrono::duration<double>(1.0 / o.producer_rate);
            rusage ru0{};
            (void)::getrusage(RUSAGE_THREAD, &ru0);
            const auto t0 = Clock::now();
            auto next_sample = t0;
            for (std::uint64_t i = 0; i < total; ++i) {
                const auto due = t0 + std::chrono::duration_cast<Clock::duration>(period * i);
                // Sampling between sends, outside the timed send (the counters are the
                // stream's, read on its sending thread).
                if (due >= next_sample) {
                    f.depth.push_back(sample(t0, stream));
                    next_sample += o.sample_every;
                }
                busy_wait(due);
                stamp_sequence(m, i);
                const auto a = Clock::now();
                const SendStatus st = stream.try_send(PayloadView(std::span<const std::byte>(m)));
                const std::uint32_t ns = saturated_ns(Clock::now() - a);
                if (st == SendStatus::spilled) {
                    spilling.push_back(ns);
                    ++f.spilled;
                } else if (st != SendStatus::ok) {
                    throw std::runtime_error("spill: try_send returned " +
                                             std::string(to_string(st)));
                }
                all.push_back(ns);
            }
            f.sent = total;
            rusage ru1{};
            (void)::getrusage(RUSAGE_THREAD, &ru1);
            f.sender_faults = ru1.ru_minflt - ru0.ru_minflt;
            f.sender_switches = ru1.ru_nivcsw - ru0.ru_nivcsw;
            // The backlog drains now that the consumer is fast: keep sampling until the spill
            // is empty (the sleep is the sampling period; the condition has a deadline).
            const Deadline drained(std::chrono::seconds(60) + o.duration * 4);
            for (;;) {
                const SpillSample s = sample(t0, stream);
                f.depth.push_back(s);
                if (s.depth == 0) break;
                if (drained.expired())
                    throw CheckFailed("spill: still " + std::to_string(s.depth) +
                                      " messages in the spill after the deadline");
                std::this_thread::sleep_for(o.sample_every);
            }
            const long sleeps_before = thread_sleeps(kDrainerThread);
            stream.close();  // flushes whatever is left
            f.drainer_sleeps_flush = thread_sleeps(kDrainerThread) - sleeps_before;
            const shm::RingCounters c = stream.outbound_counters();
            f.high_water = c.spill_high_water;
            f.drained = c.spill_drained;
            f.discarded = c.spill_discarded;
            reply = ctx.wait_for_result().value().value<std::string>();
        });
    result.outcome.rethrow_if_error();
    std::uint64_t fast_ns = 0;
    std::istringstream in(reply);
    in >> fast_ns >> f.received;
    if (!in) throw CheckFailed("spill: bad reply from the consumer \"" + reply + "\"");
    const std::uint64_t fast = total - args.slow_count;
    f.drain_rate =
        fast_ns > 0 ? static_cast<double>(fast) / (static_cast<double>(fast_ns) / 1e9) : 0;
    f.send_spilling = round_trip_percentiles(spilling);
    f.send_all = round_trip_percentiles(all);
    f.lost = f.sent > f.received ? f.sent - f.received : 0;
    if (o.drainer_idle_window.count() > 0) {
        // The drainer idles now: its CPU over a quiet window (the sleep is the window).
        const double before = thread_cpu_seconds(kDrainerThread);
        const auto w0 = Clock::now();
        std::this_thread::sleep_for(o.drainer_idle_window);
        const double after = thread_cpu_seconds(kDrainerThread);
        f.idle_window_s = std::chrono::duration<double>(Clock::now() - w0).count();
        if (before >= 0 && after >= 0)
            f.drainer_cpu_pct = 100.0 * (after - before) / f.idle_window_s;
    }
    if (f.lost != 0 || f.received != f.sent || f.discarded != 0 || f.drained != f.spilled) {
        throw CheckFailed("spill: " + std::to_string(f.sent) + " sent, " +
                          std::to_string(f.received) + " received in order, " +
                          std::to_string(f.spilled) + " spilled, " + std::to_string(f.drained) +
                          " drained, " + std::to_string(f.discarded) + " discarded");
    }
}

SpillResult run_spill(const SpillOptions& options, const std::string& ns, std::ostream& progress) {
    SpillResult result;
    result.options = options;
    with_actor_server(kStreamServerRole, ns, options.ring_bytes, progress, [&](Portal& portal) {
        overrun_run(portal, options, result);
        progress << "spill: overrun after " << result.overrun_after << " messages\n" << std::flush;
        spill_run(portal, options, result);
    });
    return result;
}

long thread_sleeps(std::string_view comm) {
    const std::string base = thread_dir(comm);
    if (base.empty()) return -1;
    std::ifstream st(base + "/status");
    for (std::string line; std::getline(st, line);) {
        if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stol(line.substr(24));
    }
    return -1;
}

double thread_cpu_seconds(std::string_view comm) {
    const std::string base = thread_dir(comm);
    if (base.empty()) return -1;
    std::ifstream s(base + "/stat");
    std::string stat;  // one line
    std::getline(s, stat);
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos) return -1;
    std::istringstream fields(stat.substr(close + 2));
    std::string skip;
    for (int i = 0; i < 11; ++i) fields >> skip;  // fields 3..13
    long utime = 0, stime = 0;
    fields >> utime >> stime;
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace shmctx::bench
