// Command-line options of the harness (also the options of `shmctx perf`).
#include <charconv>
#include <sstream>
#include <stdexcept>
#include <string>

#include "harness.hpp"

namespace shmctx::bench {
namespace {

std::vector<std::string_view> split(std::string_view list) {
    std::vector<std::string_view> out;
    while (!list.empty()) {
        const auto comma = list.find(',');
        out.push_back(list.substr(0, comma));
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return out;
}

long parse_long(std::string_view key, std::string_view v, long min, long max) {
    long x = 0;
    int shift = 0;
    if (!v.empty() && (v.back() == 'K' || v.back() == 'k')) shift = 10;
    if (!v.empty() && (v.back() == 'M' || v.back() == 'm')) shift = 20;
    if (shift != 0) v.remove_suffix(1);
    const auto [end, err] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (err != std::errc() || end != v.data() + v.size() || v.empty())
        throw std::invalid_argument(std::string(key) + ": not a number: " + std::string(v));
    x <<= shift;
    if (x < min || x > max)
        throw std::invalid_argument(std::string(key) + ": " + std::to_string(x) + " outside [" +
                                    std::to_string(min) + ", " + std::to_string(max) + "]");
    return x;
}

/// A rate in msg/s: decimal suffixes (10k = 10 000, 1M = 1 000 000), unlike sizes (1K = 1024).
double parse_rate(std::string_view key, std::string_view v) {
    long scale = 1;
    if (!v.empty() && (v.back() == 'k' || v.back() == 'K')) scale = 1000;
    if (!v.empty() && (v.back() == 'm' || v.back() == 'M')) scale = 1'000'000;
    if (scale != 1) v.remove_suffix(1);
    const long x = parse_long(key, v, 1, 100'000'000 / scale) * scale;
    return static_cast<double>(x);
}

std::vector<std::size_t> parse_sizes(std::string_view key, std::string_view v) {
    std::vector<std::size_t> out;
    for (auto s : split(v))
        out.push_back(static_cast<std::size_t>(
            parse_long(key, s, static_cast<long>(kMinMessageBytes), 1L << 20)));
    if (out.empty()) throw std::invalid_argument(std::string(key) + ": empty list");
    return out;
}

}  // namespace

std::string usage(Program program) {
    const bool perf = program == Program::perf;
    std::ostringstream s;
    if (perf) {
        s << "usage: shmctx perf [options]\n"
             "The shmctx benchmark harness: cross-process throughput, round trip, fixed-rate\n"
             "latency (coordinated-omission corrected), spill/overrun under a slow consumer and\n"
             "cancel latency, transports interleaved (bench/README.md). Options:\n";
    } else {
        s << "usage: shmctx_perf_harness [options]\n"
             "Cross-process throughput, round trip, fixed-rate latency (coordinated-omission\n"
             "corrected) and idle CPU of IPC transports, interleaved (DESIGN.md §8). Options:\n";
    }
    s << "  --sizes LIST        throughput message sizes (default 8,64,1K,16K,64K)\n"
         "  --rtt-sizes LIST    round-trip message sizes (default 64)\n"
      << (perf ? "  --transports LIST   transports to run (default shmctx,minimal,mq,uds; see "
                 "--list)\n"
               : "  --transports LIST   transports to run (default all but the peers; see "
                 "--list)\n")
      << (perf ? ""
               : "  --peers             also the peers compiled in (pipe, ZeroMQ, nng, iceoryx)\n")
      << "  --modes LIST        spin,block (default both)\n"
      << (perf ? "  --tests LIST        throughput,roundtrip,fixed-rate,spill,cancel,idle (default "
                 "all but idle)\n"
               : "  --tests LIST        throughput,roundtrip,idle,fixed-rate,spill,cancel "
                 "(default all)\n")
      << "  --duration-ms N     duration of one throughput or round-trip run (default 200)\n"
      << (perf ? "  --runs N            interleaved runs per transport and batch (default 3)\n"
               : "  --runs N            interleaved runs per transport and batch (default 5)\n")
      << "  --rates LIST        fixed-rate send rates, msg/s (default 10k,100k,1M)\n"
      << (perf ? "  --fixed-rate-ms N   duration of one fixed-rate run (default 1000)\n"
                 "  --fixed-rate-runs N fixed-rate runs per transport and batch (default --runs)\n"
               : "  --fixed-rate-ms N   duration of one fixed-rate run (default 300)\n"
                 "  --fixed-rate-runs N fixed-rate runs per transport and batch (default 3)\n")
      << "  --fixed-rate-size B fixed-rate message size (default 64)\n"
         "  --producer-rate R   spill: producer msg/s (default 200k)\n"
         "  --consumer-rate R   spill: the slow consumer's msg/s (default producer / 2)\n"
         "  --spill-ms N        spill: how long the producer sends (default 2000)\n"
         "  --spill-size B      spill: message size (default 64)\n"
         "  --cancel-iterations N  cancels of each kind (default 2000)\n"
         "  --cancel-after-us N idle time in the parked state before cancel() (default 0)\n"
         "  --idle-ms N         idle window of the idle-CPU test (default 1000)\n"
         "  --ring-bytes N      capacity of one direction (default 1M)\n"
         "  --batch N           batch of the batched variants (default 64)\n"
         "  --cpus A,B          CPUs of the parent and the peer (default: first two allowed)\n"
         "  --json FILE         also write the report as JSON\n"
         "  --svg FILE          also draw the latency percentile curves and the spill depth\n"
         "  --md FILE           also write the report as GitHub Markdown (tables, targets)\n"
         "  --save DIR          also write DIR/<date>_<commit>_<cpu>.{txt,md,json,svg}, the\n"
         "                      file set of bench/results/\n"
         "  --ns NAME           namespace of the shared objects (default bench-<pid>)\n"
         "  --inject-skip N     self-test: throughput producers skip sequence N (must fail)\n"
      << (perf ? "  --quick             a few seconds in all: 64 B, transports shmctx,minimal,uds, "
                 "spin,\n"
                 "                      1 run of 30 ms, rates 10k,100k for 100 ms, 0.3 s of "
                 "spill, 100 cancels\n"
               : "  --quick             CI smoke run: sizes 64,64K, 2 runs of 30 ms, fixed rate 1 "
                 "run of 30 ms,\n"
                 "                      200 ms idle, 0.3 s of spill, 100 cancels\n")
      << "  --list              list the transports and exit\n"
         "  --help              this text\n";
    return s.str();
}

Options parse_options(std::span<const std::string_view> args, Program program) {
    Options o;
    const bool perf = program == Program::perf;
    if (perf) {
        o.tests = {Test::throughput, Test::roundtrip, Test::fixed_rate, Test::spill, Test::cancel};
        o.transports = {"shmctx", "minimal", "mq", "uds"};
        o.runs = 3;
    } else {
        // Every test by default, so that one run evaluates every DESIGN.md §8 target; fixed
        // rate shorter and with fewer runs than the others, so that a full run with the peers
        // stays within minutes (bench/README.md §1.6).
        o.tests = {Test::throughput, Test::roundtrip, Test::fixed_rate,
                   Test::idle,       Test::spill,     Test::cancel};
        o.fixed_rate_duration = std::chrono::milliseconds(300);
        o.fixed_rate_runs = 3;
    }
    // --quick sets defaults first so that explicit options given with it still win.
    for (auto a : args) {
        if (a == "--quick" && perf) {
            o.quick = true;
            o.sizes = {64};
            o.rtt_sizes = {64};
            o.transports = {"shmctx", "minimal", "uds"};
            o.modes = {Mode::spin};
            o.duration = std::chrono::milliseconds(30);
            o.runs = 1;
            o.rates = {10'000, 100'000};
            o.fixed_rate_duration = std::chrono::milliseconds(100);
            o.idle_window = std::chrono::milliseconds(200);
            o.c2c_round_trips = 2000;
            o.spill.producer_rate = 100'000;
            o.spill.duration = std::chrono::milliseconds(300);
            o.spill.sample_every = std::chrono::milliseconds(2);
            o.cancel.iterations = 100;
            o.cancel.warmup = 20;
        } else if (a == "--quick") {
            o.quick = true;
            o.sizes = {64, 65536};
            o.rtt_sizes = {64};
            o.duration = std::chrono::milliseconds(30);
            o.runs = 2;
            o.fixed_rate_duration = std::chrono::milliseconds(30);
            o.fixed_rate_runs = 1;
            o.idle_window = std::chrono::milliseconds(200);
            o.c2c_round_trips = 5000;
            o.spill.producer_rate = 100'000;
            o.spill.duration = std::chrono::milliseconds(300);
            o.spill.sample_every = std::chrono::milliseconds(2);
            o.cancel.iterations = 100;
            o.cancel.warmup = 20;
        }
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string_view k = args[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= args.size())
                throw std::invalid_argument(std::string(k) + ": missing value");
            return args[++i];
        };
        if (k == "--quick") continue;
        if (k == "--help" || k == "-h") {
            o.help = true;
        } else if (k == "--list") {
            o.list = true;
        } else if (k == "--peers") {
            o.peers = true;
        } else if (k == "--sizes") {
            o.sizes = parse_sizes(k, value());
        } else if (k == "--rtt-sizes") {
            o.rtt_sizes = parse_sizes(k, value());
        } else if (k == "--transports") {
            o.transports.clear();
            for (auto t : split(value())) {
                bool known = false;
                for (const auto& info : transports()) known = known || info.name == t;
                if (!known)
                    throw std::invalid_argument("unknown transport \"" + std::string(t) +
                                                "\" (see --list)");
                o.transports.emplace_back(t);
            }
        } else if (k == "--modes") {
            o.modes.clear();
            for (auto m : split(value())) {
                if (m == "spin")
                    o.modes.push_back(Mode::spin);
                else if (m == "block")
                    o.modes.push_back(Mode::block);
                else
                    throw std::invalid_argument("--modes: spin or block, not " + std::string(m));
            }
        } else if (k == "--tests") {
            o.tests.clear();
            for (auto t : split(value())) {
                if (t == "throughput")
                    o.tests.push_back(Test::throughput);
                else if (t == "roundtrip")
                    o.tests.push_back(Test::roundtrip);
                else if (t == "idle")
                    o.tests.push_back(Test::idle);
                else if (t == "fixed-rate")
                    o.tests.push_back(Test::fixed_rate);
                else if (t == "spill")
                    o.tests.push_back(Test::spill);
                else if (t == "cancel")
                    o.tests.push_back(Test::cancel);
                else
                    throw std::invalid_argument(
                        "--tests: throughput, roundtrip, idle, fixed-rate, spill or cancel, not " +
                        std::string(t));
            }
        } else if (k == "--duration-ms") {
            o.duration = std::chrono::milliseconds(parse_long(k, value(), 1, 600'000));
        } else if (k == "--runs") {
            o.runs = static_cast<int>(parse_long(k, value(), 1, 1000));
        } else if (k == "--idle-ms") {
            o.idle_window = std::chrono::milliseconds(parse_long(k, value(), 10, 600'000));
        } else if (k == "--ring-bytes") {
            o.ring_bytes = static_cast<std::size_t>(parse_long(k, value(), 4096, 1L << 30));
        } else if (k == "--batch") {
            o.batch = static_cast<std::uint32_t>(parse_long(k, value(), 1, 1 << 16));
        } else if (k == "--cpus") {
            o.cpus.clear();
            for (auto c : split(value()))
                o.cpus.push_back(static_cast<int>(parse_long(k, c, 0, 4095)));
            if (o.cpus.size() != 2) throw std::invalid_argument("--cpus: two CPUs, parent,peer");
        } else if (k == "--inject-skip") {
            o.inject_skip = static_cast<std::uint64_t>(parse_long(k, value(), 0, 1L << 40));
        } else if (k == "--ns") {
            o.ns = value();
        } else if (k == "--json") {
            o.json_path = value();
        } else if (k == "--svg") {
            o.svg_path = value();
        } else if (k == "--md") {
            o.md_path = value();
        } else if (k == "--save") {
            o.save_dir = value();
        } else if (k == "--rates") {
            o.rates.clear();
            for (auto r : split(value())) o.rates.push_back(parse_rate(k, r));
            if (o.rates.empty()) throw std::invalid_argument("--rates: empty list");
        } else if (k == "--fixed-rate-ms") {
            o.fixed_rate_duration = std::chrono::milliseconds(parse_long(k, value(), 1, 600'000));
        } else if (k == "--fixed-rate-runs") {
            o.fixed_rate_runs = static_cast<int>(parse_long(k, value(), 1, 1000));
        } else if (k == "--fixed-rate-size") {
            o.fixed_rate_size = static_cast<std::size_t>(
                parse_long(k, value(), static_cast<long>(kMinMessageBytes), 1L << 20));
        } else if (k == "--producer-rate") {
            o.spill.producer_rate = parse_rate(k, value());
        } else if (k == "--consumer-rate") {
            o.spill.consumer_rate = parse_rate(k, value());
        } else if (k == "--spill-ms") {
            o.spill.duration = std::chrono::milliseconds(parse_long(k, value(), 1, 600'000));
        } else if (k == "--spill-size") {
            // At most a quarter of the 1 MiB data ring (MsgStream::max_message_bytes).
            o.spill.msg_bytes = static_cast<std::size_t>(parse_long(k, value(), 8, 64L << 10));
        } else if (k == "--cancel-iterations") {
            o.cancel.iterations = static_cast<std::size_t>(parse_long(k, value(), 1, 10'000'000));
        } else if (k == "--cancel-after-us") {
            o.cancel.cancel_after =
                std::chrono::microseconds(parse_long(k, value(), 0, 10'000'000));
        } else {
            throw std::invalid_argument("unknown option " + std::string(k) + " (see --help)");
        }
    }
    return o;
}

}  // namespace shmctx::bench
