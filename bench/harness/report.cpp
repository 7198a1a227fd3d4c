// The harness report: a human table and JSON.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <utility>

#include "harness.hpp"
#include "shmctx/errors.hpp"

namespace shmctx::bench {
namespace {

/// Concatenation by append: GCC 12 reports a false -Wrestrict for `"literal" + std::string`
/// at -O3 (GCC bug 105329).
template <class... A>
std::string cat(const A&... parts) {
    std::string s;
    (s.append(std::string_view(parts)), ...);
    return s;
}

/// 46.1M, 812k, 950
std::string si(double v) {
    char buf[32];
    if (v >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
    else if (v >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
    else if (v >= 1e3)
        std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
}

/// Nanoseconds as "210ns", "19.2us", "1.20ms".
std::string dur(double ns) {
    char buf[32];
    if (ns >= 1e6)
        std::snprintf(buf, sizeof buf, "%.2fms", ns / 1e6);
    else if (ns >= 1e4)
        std::snprintf(buf, sizeof buf, "%.1fus", ns / 1e3);
    else if (ns >= 1e3)
        std::snprintf(buf, sizeof buf, "%.2fus", ns / 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.0fns", ns);
    return buf;
}

std::string size_text(std::size_t b) {
    if (b >= 1024 && b % 1024 == 0) return std::to_string(b / 1024) + " KiB";
    return std::to_string(b) + " B";
}

template <class F>
Stat stat_of(const std::vector<RoundTripRun>& runs, F f) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(f(r));
    return summarize(std::move(v));
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out;
}

std::string num(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

std::string stat_json(const Stat& s) {
    return cat("{\"median\": ", num(s.median), ", \"min\": ", num(s.min), ", \"max\": ", num(s.max),
               "}");
}

template <class T, class F>
std::string list_json(const std::vector<T>& v, F f) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i != 0) out += ", ";
        out += f(v[i]);
    }
    out += "]";
    return out;
}

const Cell* find_cell(const Report& r, Test test, Mode mode, std::size_t size,
                      std::string_view transport) {
    for (const Batch& b : r.batches) {
        if (b.test != test || b.mode != mode || b.size != size) continue;
        for (const Cell& c : b.cells)
            if (c.transport == transport) return &c;
    }
    return nullptr;
}

const Batch* find_batch(const Report& r, Test test, Mode mode, std::size_t size) {
    for (const Batch& b : r.batches)
        if (b.test == test && b.mode == mode && b.size == size) return &b;
    return nullptr;
}

double median_rate(const Cell& c) { return summarize(c.msgs_per_s).median; }
double median_p50(const Cell& c) {
    return stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; }).median;
}

}  // namespace

std::vector<TargetCheck> check_targets(const Report& r) {
    std::vector<TargetCheck> out;
    auto add = [&](std::string what, double value, double target, bool at_least) {
        if (!std::isfinite(value)) return;
        out.push_back({std::move(what), value, target, at_least,
                       at_least ? value >= target : value <= target});
    };
    // Throughput, 64 B, spin, against the baselines. The target compares like with like:
    // shmctx-batch batches both ends (Publish::deferred + publish() per batch, drain) as
    // minimal-batch does. shmctx-drain publishes every message (each publish moves the tail's
    // cache line to the producer and back), shown for information: it is what a sender that
    // cannot batch gets.
    for (const auto& [variant, info] :
         {std::pair<std::string_view, bool>{"shmctx-batch", false}, {"shmctx-drain", true}}) {
        const Cell* ours = find_cell(r, Test::throughput, Mode::spin, 64, variant);
        for (const auto& [base, target] :
             {std::pair<std::string_view, double>{"minimal-batch", 0.5},
              {"mq", 5.0},
              {"uds", 50.0}}) {
            const Cell* other = find_cell(r, Test::throughput, Mode::spin, 64, base);
            if (ours != nullptr && other != nullptr && median_rate(*other) > 0)
                add(cat("throughput 64 B spin: ", variant, " / ", base,
                        info ? " (info: publish per message)" : ""),
                    median_rate(*ours) / median_rate(*other), target, true);
        }
    }
    // Round trip p50, 64 B: spin against the minimal ring, block against the socket.
    const Cell* rtt = find_cell(r, Test::roundtrip, Mode::spin, 64, "shmctx");
    const Cell* rtt_min = find_cell(r, Test::roundtrip, Mode::spin, 64, "minimal");
    if (rtt != nullptr && rtt_min != nullptr && median_p50(*rtt_min) > 0)
        add("round trip p50 64 B spin: shmctx / minimal", median_p50(*rtt) / median_p50(*rtt_min),
            2.0, false);
    const Cell* rtt_b = find_cell(r, Test::roundtrip, Mode::block, 64, "shmctx");
    const Cell* rtt_uds = find_cell(r, Test::roundtrip, Mode::block, 64, "uds");
    if (rtt_b != nullptr && rtt_uds != nullptr && median_p50(*rtt_uds) > 0)
        add("round trip p50 64 B block: shmctx / uds", median_p50(*rtt_b) / median_p50(*rtt_uds),
            0.7, false);
    // 64 KiB throughput against single-thread memcpy bandwidth of the same batch.
    const Batch* big = find_batch(r, Test::throughput, Mode::spin, 65536);
    const Cell* big_ours = find_cell(r, Test::throughput, Mode::spin, 65536, "shmctx-drain");
    if (big != nullptr && big_ours != nullptr && big->memcpy.gbytes_per_s > 0)
        add("throughput 64 KiB spin: shmctx-drain GB/s / memcpy GB/s",
            median_rate(*big_ours) * 65536.0 / 1e9 / big->memcpy.gbytes_per_s, 0.5, true);
    for (const IdleResult& i : r.idle)
        if (i.transport == "shmctx")
            add("idle CPU % of a blocked shmctx consumer", i.cpu_percent, 1.0, false);
    return out;
}

std::string format_ns(double ns) { return dur(ns); }

std::string json_escaped(std::string_view s) { return json_escape(s); }

void print_table(const Report& r, std::ostream& out) {
    out << "shmctx perf harness  commit " << r.commit.substr(0, 12) << "  " << r.date << "\n"
        << "cpu: " << r.cpu << "   placement: " << r.placement.text << "   build: " << r.build_type
        << "\n"
        << "runs " << r.options.runs << " x " << r.options.duration.count()
        << " ms, interleaved; ring " << r.options.ring_bytes << " B; batch " << r.options.batch
        << "; medians with (min - max) over runs\n";
    if (r.build_type != "Release" && r.build_type != "RelWithDebInfo")
        out << "WARNING: not an optimised build; figures are not meaningful\n";
    for (const Batch& b : r.batches) {
        out << "\n"
            << to_string(b.test) << "  " << size_text(b.size) << "  " << to_string(b.mode)
            << "   [c2c round trip " << dur(b.c2c.median_ns) << ", memcpy " << std::fixed
            << std::setprecision(1) << b.memcpy.gbytes_per_s << " GB/s]\n";
        char line[256];
        if (b.test == Test::throughput) {
            std::snprintf(line, sizeof line, "  %-14s %10s %21s %10s\n", "transport", "msg/s",
                          "(min - max)", "MB/s");
            out << line;
            for (const Cell& c : b.cells) {
                const Stat s = summarize(c.msgs_per_s);
                const std::string range = cat("(", si(s.min), " - ", si(s.max), ")");
                std::snprintf(line, sizeof line, "  %-14s %10s %21s %10.0f\n", c.transport.c_str(),
                              si(s.median).c_str(), range.c_str(),
                              s.median * static_cast<double>(b.size) / 1e6);
                out << line;
            }
        } else {
            std::snprintf(line, sizeof line, "  %-14s %9s %9s %9s %9s %9s %21s\n", "transport",
                          "p50", "p90", "p99", "p99.9", "max", "p50 (min - max)");
            out << line;
            for (const Cell& c : b.cells) {
                const Stat p50 = stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; });
                const std::string range = cat("(", dur(p50.min), " - ", dur(p50.max), ")");
                std::snprintf(
                    line, sizeof line, "  %-14s %9s %9s %9s %9s %9s %21s\n", c.transport.c_str(),
                    dur(p50.median).c_str(),
                    dur(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p90; }).median).c_str(),
                    dur(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p99; }).median).c_str(),
                    dur(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p999; }).median)
                        .c_str(),
                    dur(stat_of(c.rtt, [](const RoundTripRun& x) { return x.max; }).median).c_str(),
                    range.c_str());
                out << line;
            }
        }
    }
    if (!r.idle.empty()) {
        out << "\nidle CPU of a consumer blocked in receive (block mode, "
            << r.options.idle_window.count() << " ms window, getrusage)\n";
        for (const IdleResult& i : r.idle) {
            char line[128];
            std::snprintf(line, sizeof line, "  %-14s %8.3f %%\n", i.transport.c_str(),
                          i.cpu_percent);
            out << line;
        }
    }
    const auto targets = check_targets(r);
    if (!targets.empty()) {
        out << "\nDESIGN.md §8 targets (ratios of medians within one batch)\n";
        for (const TargetCheck& t : targets) {
            char line[256];
            std::snprintf(line, sizeof line, "  %-58s %8.3f  %s %-5g %s\n", t.what.c_str(), t.value,
                          t.at_least ? ">=" : "<=", t.target, t.met ? "met" : "MISSED");
            out << line;
        }
    }
}

void write_json(const Report& r, const std::string& path) {
    std::ostringstream j;
    const Options& o = r.options;
    j << "{\n  \"tool\": \"shmctx_perf_harness\",\n"
      << "  \"commit\": \"" << json_escape(r.commit) << "\",\n"
      << "  \"cpu\": \"" << json_escape(r.cpu) << "\",\n"
      << "  \"date\": \"" << r.date << "\",\n"
      << "  \"build_type\": \"" << json_escape(r.build_type) << "\",\n"
      << "  \"placement\": {\"parent_cpu\": " << r.placement.parent_cpu
      << ", \"peer_cpu\": " << r.placement.peer_cpu << ", \"text\": \""
      << json_escape(r.placement.text) << "\"},\n"
      << "  \"parameters\": {\"sizes\": "
      << list_json(o.sizes, [](std::size_t s) { return std::to_string(s); }) << ", \"rtt_sizes\": "
      << list_json(o.rtt_sizes, [](std::size_t s) { return std::to_string(s); })
      << ", \"duration_ms\": " << o.duration.count() << ", \"runs\": " << o.runs
      << ", \"idle_ms\": " << o.idle_window.count() << ", \"ring_bytes\": " << o.ring_bytes
      << ", \"batch\": " << o.batch << ", \"quick\": " << (o.quick ? "true" : "false")
      << ", \"modes\": " << list_json(o.modes, [](Mode m) { return cat("\"", to_string(m), "\""); })
      << ", \"transports\": "
      << list_json(o.transports,
                   [](const std::string& t) { return cat("\"", json_escape(t), "\""); })
      << "},\n  \"batches\": [";
    for (std::size_t bi = 0; bi < r.batches.size(); ++bi) {
        const Batch& b = r.batches[bi];
        j << (bi ? ",\n" : "\n") << "    {\"test\": \"" << to_string(b.test) << "\", \"mode\": \""
          << to_string(b.mode) << "\", \"size\": " << b.size
          << ", \"c2c_rtt_ns\": {\"median\": " << num(b.c2c.median_ns)
          << ", \"min\": " << num(b.c2c.min_ns)
          << "}, \"memcpy\": {\"gbytes_per_s\": " << num(b.memcpy.gbytes_per_s)
          << ", \"block_bytes\": " << b.memcpy.block_bytes
          << ", \"working_set_bytes\": " << b.memcpy.working_set_bytes << "},\n     \"results\": [";
        for (std::size_t ci = 0; ci < b.cells.size(); ++ci) {
            const Cell& c = b.cells[ci];
            j << (ci ? ",\n" : "\n") << "       {\"transport\": \"" << json_escape(c.transport)
              << "\"";
            if (b.test == Test::throughput) {
                const Stat s = summarize(c.msgs_per_s);
                j << ", \"msgs_per_s\": " << stat_json(s) << ", \"mbytes_per_s\": "
                  << stat_json({s.median * static_cast<double>(b.size) / 1e6,
                                s.min * static_cast<double>(b.size) / 1e6,
                                s.max * static_cast<double>(b.size) / 1e6})
                  << ", \"runs_msgs_per_s\": " << list_json(c.msgs_per_s, num);
            } else {
                j << ", \"p50_ns\": "
                  << stat_json(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; }))
                  << ", \"p90_ns\": "
                  << stat_json(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p90; }))
                  << ", \"p99_ns\": "
                  << stat_json(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p99; }))
                  << ", \"p999_ns\": "
                  << stat_json(stat_of(c.rtt, [](const RoundTripRun& x) { return x.p999; }))
                  << ", \"max_ns\": "
                  << stat_json(stat_of(c.rtt, [](const RoundTripRun& x) { return x.max; }))
                  << ", \"samples_per_run\": " << list_json(c.rtt, [](const RoundTripRun& x) {
                         return std::to_string(x.samples);
                     });
            }
            j << "}";
        }
        j << "]}";
    }
    j << "\n  ],\n  \"idle\": [";
    for (std::size_t i = 0; i < r.idle.size(); ++i) {
        j << (i ? ", " : "") << "{\"transport\": \"" << json_escape(r.idle[i].transport)
          << "\", \"cpu_percent\": " << num(r.idle[i].cpu_percent)
          << ", \"window_ms\": " << num(r.idle[i].window_ms) << "}";
    }
    j << "],\n  \"targets\": [";
    const auto targets = check_targets(r);
    for (std::size_t i = 0; i < targets.size(); ++i) {
        const TargetCheck& t = targets[i];
        j << (i ? ",\n    " : "\n    ") << "{\"what\": \"" << json_escape(t.what)
          << "\", \"value\": " << num(t.value) << ", \"target\": " << num(t.target)
          << ", \"at_least\": " << (t.at_least ? "true" : "false")
          << ", \"met\": " << (t.met ? "true" : "false") << "}";
    }
    j << "]\n}\n";
    std::ofstream f(path, std::ios::trunc);
    f << j.str();
    f.close();
    if (!f) throw SystemError("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace shmctx::bench
