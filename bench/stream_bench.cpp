// shmctx_bench_stream: stream throughput and the spill mode across two processes, against the
// harness's raw ring throughput measured in the same run (issue #5 bars; bench/README.md §6).
//
//   shmctx_bench_stream [--rounds 5] [--messages N] [--spill-seconds 10] [--rate R]
//                       [--quick] [--json FILE] [--help]
//
// Processes: this program posix_spawns one copy of itself as the harness's stream server
// (`--role stream-server`, bench/harness/spill.hpp: an Actor exposing "sink" and "sink_overrun",
// which consume a stream and check every sequence number) and, for every ring measurement, the
// harness's own peers (bench::run()). Phase C is the harness's spill_run (spill.hpp).
//
// Rounds, interleaved A B A B ... (bench/README.md §1.2):
//  A  bench::run(): the harness's one-way throughput of "shmctx-drain" (try_write, publish each,
//     reader drain(batch)), 64 B, block mode: the raw ring.
//  B  stream throughput: open_context("sink"), the parent sends `messages` 64-byte messages with
//     MsgStream::send (on_full = block: backpressure instead of StreamOverrun), the child reads
//     them with MsgStream::drain; the time from the first send to the Return (which the child
//     sends after it checked the last message). B/A is the bar (>= 0.8).
// Then once, after the rounds (it takes --spill-seconds):
//  C  spill: open_context("sink_overrun") (the child allows overruns, 64-message ring); the
//     parent try_sends at `rate` msg/s for --spill-seconds, each send timed alone; the child
//     consumes at rate/2 (a busy wait per message) until it has read rate*seconds/2 messages,
//     then at full speed. Figures: send p50/p99/p99.9/max over the sends that spilled, spill
//     high water, the drain rate of the backlog once the consumer runs at full speed (messages
//     read after the switch / time to read them) against A, zero loss and order (checked by the
//     child), and the drainer thread's CPU over a 2 s idle window after the stream ended.
// Speed is reported, never asserted: the exit status is 0 whenever every check passed.
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "harness.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/names.hpp"
#include "spill.hpp"

namespace shmctx::bench {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kMessageBytes = 64;
constexpr std::size_t kRingBytes = std::size_t{1} << 20;  // = the harness's ring_bytes

struct Config {
    int rounds = 5;
    std::uint64_t messages = 2'000'000;
    double spill_seconds = 10;
    double rate = 200'000;  // producer msg/s in the spill phase
    std::chrono::milliseconds ring_duration{300};
    std::string json_path;
    std::string ns;  // empty: "bench-stream-<pid>"
    bool help = false;
};

std::string stream_usage() {
    return "usage: shmctx_bench_stream [--rounds N] [--messages N] [--spill-seconds S] [--rate R]\n"
           "                           [--quick] [--ns NS] [--json FILE] [--help]\n"
           "  stream throughput (64 B, drain on the reader) vs the raw ring, interleaved rounds;\n"
           "  then the spill mode: producer at R msg/s, consumer at R/2 for S seconds.\n";
}

template <class T>
T parse_number(std::string_view flag, std::string_view text) {
    T value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        throw std::invalid_argument(std::string(flag) + ": not a number: " + std::string(text));
    }
    return value;
}

Config parse_config(const std::vector<std::string_view>& args) {
    Config c;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string_view a = args[i];
        const auto next = [&]() -> std::string_view {
            if (i + 1 >= args.size())
                throw std::invalid_argument(std::string(a) + " needs a value");
            return args[++i];
        };
        if (a == "--rounds") {
            c.rounds = parse_number<int>(a, next());
        } else if (a == "--messages") {
            c.messages = parse_number<std::uint64_t>(a, next());
        } else if (a == "--spill-seconds") {
            c.spill_seconds = parse_number<double>(a, next());
        } else if (a == "--rate") {
            c.rate = parse_number<double>(a, next());
        } else if (a == "--ns") {
            c.ns = std::string(next());
        } else if (a == "--json") {
            c.json_path = std::string(next());
        } else if (a == "--quick") {
            c.rounds = 1;
            c.messages = 100'000;
            c.spill_seconds = 0.3;
            c.ring_duration = 100ms;
        } else if (a == "--help" || a == "-h") {
            c.help = true;
        } else {
            throw std::invalid_argument("unknown argument " + std::string(a));
        }
    }
    if (c.rounds < 1 || c.messages < 1 || c.spill_seconds <= 0 || c.rate <= 0) {
        throw std::invalid_argument("--rounds, --messages, --spill-seconds, --rate must be > 0");
    }
    return c;
}

// ---- the parent ----

/// The CPUs this process may use at start; bench::run() pins the calling thread, so every
/// round names the same two CPUs and the thread gets this mask back afterwards (the stream
/// phases run where the scheduler puts them).
struct Cpus {
    cpu_set_t mask{};
    std::vector<int> first_two;
};

Cpus initial_cpus() {
    Cpus c;
    if (sched_getaffinity(0, sizeof c.mask, &c.mask) != 0) return c;
    for (int cpu = 0; cpu < CPU_SETSIZE && c.first_two.size() < 2; ++cpu) {
        if (CPU_ISSET(static_cast<std::size_t>(cpu), &c.mask)) c.first_two.push_back(cpu);
    }
    return c;
}

double ring_throughput(const Config& cfg, const std::string& ns, const std::atomic<bool>* stop,
                       const Cpus& cpus) {
    Options o;
    if (cpus.first_two.size() == 2) o.cpus = cpus.first_two;
    o.tests = {Test::throughput};
    o.transports = {"shmctx-drain"};
    o.modes = {Mode::block};
    o.sizes = {kMessageBytes};
    o.duration = cfg.ring_duration;
    o.runs = 1;
    o.ns = ns + "-ring";
    o.stop = stop;
    std::ostringstream progress;
    const Report rep = run(o, progress);
    (void)sched_setaffinity(0, sizeof cpus.mask, &cpus.mask);  // unpin (see Cpus)
    if (rep.batches.size() != 1 || rep.batches[0].cells.size() != 1 ||
        rep.batches[0].cells[0].msgs_per_s.size() != 1) {
        throw std::logic_error("harness report: expected one throughput run");
    }
    return rep.batches[0].cells[0].msgs_per_s[0];
}

std::array<std::byte, kMessageBytes> message_for(std::uint64_t seq) {
    std::array<std::byte, kMessageBytes> m{};
    stamp_sequence(m, seq);
    return m;
}

/// B: messages/s of one stream run; sender and reader pinned like the raw ring's processes.
double stream_throughput(Portal& portal, std::uint64_t messages, const Cpus& cpus) {
    double rate = 0;
    const bool pin = cpus.first_two.size() == 2;
    SinkArgs args;
    args.count = messages;
    args.cpu = pin ? cpus.first_two[1] : -1;
    args.msg_bytes = kMessageBytes;
    // The sender sits where the raw ring's parent sits (pin_to pins the calling thread).
    if (pin) pin_to(cpus.first_two[0]);
    auto result = portal.open_context(
        kSinkEndpoint, Payload::value(args.encode()).view(), [&](Context& ctx, const Payload&) {
            StreamOptions so;
            so.on_full = OnFull::block;
            MsgStream stream = ctx.open_stream(so);
            const auto t0 = Clock::now();
            for (std::uint64_t i = 0; i < messages; ++i) {
                const auto m = message_for(i);
                stream.send(PayloadView(std::span<const std::byte>(m)));
            }
            (void)ctx.wait_for_result();
            const double s = std::chrono::duration<double>(Clock::now() - t0).count();
            rate = static_cast<double>(messages) / s;
        });
    (void)sched_setaffinity(0, sizeof cpus.mask, &cpus.mask);  // unpin
    result.outcome.rethrow_if_error();
    return rate;
}

std::string si(double v) {
    std::ostringstream o;
    o << std::fixed << std::setprecision(2);
    if (v >= 1e6) {
        o << v / 1e6 << " M";
    } else if (v >= 1e3) {
        o << v / 1e3 << " k";
    } else {
        o << v << " ";
    }
    return o.str();
}

int parent_main(const Config& cfg, const std::string& command, const std::atomic<bool>& stop) {
    const std::string ns = cfg.ns.empty() ? "bench-stream-" + std::to_string(getpid()) : cfg.ns;
    const std::string server_name = "stream-server";
    const Cpus cpus = initial_cpus();
    std::vector<double> ring, stream, ratio;
    SpillResult spill;
    // The measurement, with the server's lifetime inside: if it fails, ~Peer has killed and
    // reaped the server by the time the catch below runs, and a dead server cannot remove its
    // own objects: reclaim them (the namespace holds only this run's actors).
    const auto measure = [&] {
        Peer peer = Peer::spawn({"--role", std::string(kStreamServerRole), "--ns", ns, "--name",
                                 server_name, "--ring-bytes", std::to_string(kRingBytes)});
        if (const std::string line = peer.read_line(Deadline(10s)); line != "ready") {
            throw std::runtime_error("server: expected \"ready\", got \"" + line + "\"");
        }
        {
            ActorOptions o;
            o.ns = ns;
            o.data_ring_bytes = kRingBytes;
            Actor client("stream-client", o);
            Portal portal = client.connect(server_name, 10s);
            (void)stream_throughput(portal, std::min<std::uint64_t>(cfg.messages, 100'000),
                                    cpus);  // warm-up
            for (int r = 0; r < cfg.rounds && !stop.load(std::memory_order::relaxed); ++r) {
                const double a = ring_throughput(cfg, ns, &stop, cpus);
                const double b = stream_throughput(portal, cfg.messages, cpus);
                ring.push_back(a);
                stream.push_back(b);
                ratio.push_back(b / a);
                std::cout << "round " << r + 1 << ": ring " << si(a) << "msg/s, stream " << si(b)
                          << "msg/s, ratio " << std::setprecision(3) << b / a << "\n"
                          << std::flush;
            }
            SpillOptions so;
            so.producer_rate = cfg.rate;
            so.consumer_rate = cfg.rate / 2;
            so.duration = std::chrono::milliseconds(std::llround(cfg.spill_seconds * 1000));
            so.msg_bytes = kMessageBytes;
            so.drainer_idle_window = 2s;
            so.ring_bytes = kRingBytes;
            spill_run(portal, so, spill);
        }
        peer.write_line("quit");
        peer.wait_success(Deadline(10s));
    };
    try {
        measure();
    } catch (...) {
        try {
            (void)shm::reclaim_stale(shm::Names(ns));
        } catch (const std::exception& e) {
            std::cerr << "shmctx_bench_stream: reclaiming the run's objects: " << e.what() << "\n";
        }
        throw;
    }

    const Stat rs = summarize(ring), ss = summarize(stream), qs = summarize(ratio);
    std::cout << "\n"
              << command << "\n\n"
              << "stream throughput, 64 B, send (on_full=block) -> drain, two processes\n"
              << "  raw ring (harness shmctx-drain, block): median " << si(rs.median) << "msg/s ("
              << si(rs.min) << "- " << si(rs.max) << ")\n"
              << "  stream:                                 median " << si(ss.median) << "msg/s ("
              << si(ss.min) << "- " << si(ss.max) << ")\n"
              << "  stream / ring: median " << std::setprecision(3) << qs.median << " (" << qs.min
              << "-" << qs.max << ")   bar >= 0.8\n\n"
              << "spill: " << cfg.rate << " msg/s for " << cfg.spill_seconds
              << " s, consumer at half rate, then full speed\n"
              << "  sent " << spill.sent << ", spilled " << spill.spilled << ", drained "
              << spill.drained << ", discarded " << spill.discarded << ", high water "
              << spill.high_water << ", " << spill.received
              << " received in order (checked by the consumer)\n"
              << "  send while spilling: p50 " << format_ns(spill.send_spilling.p50) << ", p99 "
              << format_ns(spill.send_spilling.p99) << ", p99.9 "
              << format_ns(spill.send_spilling.p999) << " (bar <= 5us), max "
              << format_ns(spill.send_spilling.max) << "; the sending thread took "
              << spill.sender_faults << " minor page faults and was preempted "
              << spill.sender_switches << " times\n"
              << "  every send:          p50 " << format_ns(spill.send_all.p50) << ", p99.9 "
              << format_ns(spill.send_all.p999) << "\n"
              << "  drain rate once the consumer is fast: " << si(spill.drain_rate)
              << "msg/s = " << std::setprecision(3) << spill.drain_rate / rs.median
              << "x the raw ring median (bar >= 0.5); the drainer slept "
              << spill.drainer_sleeps_flush << " times while close() flushed\n"
              << "  drainer CPU over a " << std::setprecision(2) << spill.idle_window_s
              << " s idle window: " << std::setprecision(3) << spill.drainer_cpu_pct
              << " % (bar < 1 %)\n";
    if (!cfg.json_path.empty()) {
        std::ofstream j(cfg.json_path);
        j << "{\"command\":\"" << json_escaped(command) << "\",\"ring_msgs_per_s\":" << rs.median
          << ",\"stream_msgs_per_s\":" << ss.median << ",\"stream_ring_ratio\":" << qs.median
          << ",\"spill\":{\"sent\":" << spill.sent << ",\"spilled\":" << spill.spilled
          << ",\"high_water\":" << spill.high_water
          << ",\"send_p999_ns\":" << spill.send_spilling.p999
          << ",\"drain_rate\":" << spill.drain_rate
          << ",\"drainer_cpu_pct\":" << spill.drainer_cpu_pct << "}}\n";
        std::cout << "\nwrote " << cfg.json_path << "\n";
    }
    return 0;
}

}  // namespace
}  // namespace shmctx::bench

int main(int argc, char** argv) {
    namespace b = shmctx::bench;
    const std::vector<std::string_view> args(argv + 1, argv + argc);
    // The harness's ring peers and the stream server (--role stream-server, spill.hpp).
    if (b::is_peer_invocation(args)) return b::peer_main(args);
    std::signal(SIGPIPE, SIG_IGN);
    std::string command = "shmctx_bench_stream";
    for (auto a : args) (command += ' ') += a;
    const std::atomic<bool>& stop = b::stop_on_signals("shmctx_bench_stream", "round");
    try {
        const b::Config cfg = b::parse_config(args);
        if (cfg.help) {
            std::cout << b::stream_usage();
            return 0;
        }
        return b::parent_main(cfg, command, stop);
    } catch (const std::invalid_argument& e) {
        std::cerr << "shmctx_bench_stream: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "shmctx_bench_stream: FAILED: " << e.what() << "\n";
        return 1;
    }
}
