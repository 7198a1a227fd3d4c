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

std::vector<std::size_t> parse_sizes(std::string_view key, std::string_view v) {
    std::vector<std::size_t> out;
    for (auto s : split(v))
        out.push_back(static_cast<std::size_t>(
            parse_long(key, s, static_cast<long>(kMinMessageBytes), 1L << 20)));
    if (out.empty()) throw std::invalid_argument(std::string(key) + ": empty list");
    return out;
}

}  // namespace

std::string usage() {
    std::ostringstream s;
    s << "usage: shmctx_perf_harness [options]\n"
         "Cross-process throughput, round trip and idle CPU of IPC transports, interleaved\n"
         "(DESIGN.md §8). Options:\n"
         "  --sizes LIST        throughput message sizes (default 8,64,1K,16K,64K)\n"
         "  --rtt-sizes LIST    round-trip message sizes (default 64)\n"
         "  --transports LIST   transports to run (default all; see --list)\n"
         "  --modes LIST        spin,block (default both)\n"
         "  --tests LIST        throughput,roundtrip,idle (default all)\n"
         "  --duration-ms N     duration of one run (default 200)\n"
         "  --runs N            interleaved runs per transport and batch (default 5)\n"
         "  --idle-ms N         idle window of the idle-CPU test (default 1000)\n"
         "  --ring-bytes N      capacity of one direction (default 1M)\n"
         "  --batch N           batch of the batched variants (default 64)\n"
         "  --cpus A,B          CPUs of the parent and the peer (default: first two allowed)\n"
         "  --json FILE         also write the report as JSON\n"
         "  --ns NAME           namespace of the shared objects (default bench-<pid>)\n"
         "  --inject-skip N     self-test: throughput producers skip sequence N (must fail)\n"
         "  --quick             CI smoke run: sizes 64,64K, 2 runs of 30 ms, 200 ms idle\n"
         "  --list              list the transports and exit\n"
         "  --help              this text\n";
    return s.str();
}

Options parse_options(std::span<const std::string_view> args) {
    Options o;
    // --quick sets defaults first so that explicit options given with it still win.
    for (auto a : args) {
        if (a == "--quick") {
            o.quick = true;
            o.sizes = {64, 65536};
            o.rtt_sizes = {64};
            o.duration = std::chrono::milliseconds(30);
            o.runs = 2;
            o.idle_window = std::chrono::milliseconds(200);
            o.c2c_round_trips = 5000;
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
                else
                    throw std::invalid_argument("--tests: throughput, roundtrip or idle, not " +
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
        } else {
            throw std::invalid_argument("unknown option " + std::string(k) + " (see --help)");
        }
    }
    return o;
}

}  // namespace shmctx::bench
