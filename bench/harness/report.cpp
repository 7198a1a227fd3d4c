// The harness report: a human table and JSON.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <utility>
#include <vector>

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
    if (ns >= 1e9)
        std::snprintf(buf, sizeof buf, "%.2fs", ns / 1e9);
    else if (ns >= 1e6)
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

template <class F>
Stat stat_of_fixed(const std::vector<FixedRateRun>& runs, F f) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(f(r));
    return summarize(std::move(v));
}

std::string rtt_json(const RoundTripRun& r) {
    return cat("{\"p50_ns\": ", num(r.p50), ", \"p90_ns\": ", num(r.p90),
               ", \"p99_ns\": ", num(r.p99), ", \"p999_ns\": ", num(r.p999),
               ", \"p9999_ns\": ", num(r.p9999), ", \"max_ns\": ", num(r.max),
               ", \"samples\": ", std::to_string(r.samples), "}");
}

void print_fixed_rate(const Batch& b, std::ostream& out) {
    char line[256];
    out << "  latency from each message's intended send time (coordinated-omission corrected), "
           "medians over runs\n";
    std::snprintf(line, sizeof line, "  %-19s %8s %8s %8s %8s %8s %8s | %8s %8s | %6s %9s\n",
                  "transport", "p50", "p90", "p99", "p99.9", "p99.99", "max", "raw p99.9",
                  "raw max", "late", "achieved");
    out << line;
    for (const Cell& c : b.cells) {
        auto med = [&](auto f) { return dur(stat_of_fixed(c.fixed, f).median); };
        const double late = stat_of_fixed(c.fixed, [](const FixedRateRun& x) {
                                return x.corrected.samples == 0
                                           ? 0.0
                                           : 100.0 * static_cast<double>(x.late) /
                                                 static_cast<double>(x.corrected.samples);
                            }).median;
        char late_text[16];
        std::snprintf(late_text, sizeof late_text, "%.1f%%", late);
        const std::string achieved =
            cat(si(stat_of_fixed(c.fixed, [](const FixedRateRun& x) { return x.achieved; }).median),
                "/s");
        std::snprintf(line, sizeof line, "  %-19s %8s %8s %8s %8s %8s %8s | %8s %8s | %6s %9s\n",
                      c.transport.c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.p50; }).c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.p90; }).c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.p99; }).c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.p999; }).c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.p9999; }).c_str(),
                      med([](const FixedRateRun& x) { return x.corrected.max; }).c_str(),
                      med([](const FixedRateRun& x) { return x.uncorrected.p999; }).c_str(),
                      med([](const FixedRateRun& x) { return x.uncorrected.max; }).c_str(),
                      late_text, achieved.c_str());
        out << line;
    }
    for (const Cell& c : b.cells) {
        std::size_t runs = 0;
        std::vector<double> unsent;
        for (const FixedRateRun& x : c.fixed) {
            if (x.unsent == 0) continue;
            ++runs;
            unsent.push_back(static_cast<double>(x.unsent) /
                             static_cast<double>(std::max<std::size_t>(x.corrected.samples, 1)));
        }
        if (runs == 0) continue;
        char note[256];
        std::snprintf(note, sizeof note,
                      "  %s: rate not sustained in %zu of %zu runs: a median %.1f%% of the "
                      "messages not sent within 3 x the duration + 1 s (counted with the time "
                      "they had waited)\n",
                      c.transport.c_str(), runs, c.fixed.size(), 100 * summarize(unsent).median);
        out << note;
    }
}

void print_spill(const SpillResult& s, std::ostream& out) {
    const SpillOptions& o = s.options;
    out << "\nspill under a slow consumer: producer " << format_rate(o.producer_rate)
        << ", consumer " << format_rate(o.slow_rate()) << " for " << o.duration.count()
        << " ms, then full speed; " << o.msg_bytes << " B messages, 64-message ring\n"
        << "  overrun (default policy, on_full = raise): StreamOverrun after " << s.overrun_after
        << " messages";
    if (!s.overrun_what.empty()) out << " (" << s.overrun_what << ")";
    out << "\n  allow_overruns: sent " << s.sent << ", received " << s.received
        << " in order (checked by the consumer), lost " << s.lost << "; spilled " << s.spilled
        << ", drained " << s.drained << ", discarded " << s.discarded << ", high water "
        << s.high_water << "\n"
        << "  try_send while spilling: p50 " << dur(s.send_spilling.p50) << ", p99 "
        << dur(s.send_spilling.p99) << ", p99.9 " << dur(s.send_spilling.p999) << ", max "
        << dur(s.send_spilling.max) << " (" << s.send_spilling.samples
        << " sends); every send: p50 " << dur(s.send_all.p50) << ", p99.9 " << dur(s.send_all.p999)
        << "\n"
        << "  drain rate once the consumer is fast: " << si(s.drain_rate)
        << " msg/s; the sending thread took " << s.sender_faults
        << " minor page faults and was preempted " << s.sender_switches << " times\n";
    if (s.drainer_cpu_pct >= 0) {
        char line[128];
        std::snprintf(line, sizeof line, "  drainer CPU over a %.2f s idle window: %.3f %%\n",
                      s.idle_window_s, s.drainer_cpu_pct);
        out << line;
    }
}

void print_cancel(const CancelResult& c, std::ostream& out) {
    char line[256];
    out << "\ncontext round trip (open_context on echo: open, Start, Started, Return) and cancel "
           "latency (ctx.cancel() to its return with the ctxc recorded), "
        << c.options.iterations << " of each kind";
    if (c.options.cancel_after.count() > 0)
        out << ", " << c.options.cancel_after.count() << " us after the parked state";
    out << "\n";
    std::snprintf(line, sizeof line, "  %-34s %9s %9s %9s %9s %9s\n", "call", "p50", "p90", "p99",
                  "p99.9", "max");
    out << line;
    for (const auto& [what, r] :
         {std::pair<const char*, const RoundTripRun*>{"context round trip", &c.context},
          {"cancel: parked in receive()", &c.park},
          {"cancel: in send(), both rings full", &c.full}}) {
        std::snprintf(line, sizeof line, "  %-34s %9s %9s %9s %9s %9s\n", what, dur(r->p50).c_str(),
                      dur(r->p90).c_str(), dur(r->p99).c_str(), dur(r->p999).c_str(),
                      dur(r->max).c_str());
        out << line;
    }
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

    // The peers (issue #11), like the baselines above: the ring batched at both ends (ZeroMQ
    // batches on its I/O thread too); for information the ring publishing every message and
    // the public stream API, against each peer of the same batch.
    for (const auto& [variant, info] : {std::pair<std::string_view, bool>{"shmctx-batch", false},
                                        {"shmctx-drain", true},
                                        {"shmctx-stream", true},
                                        {"shmctx-stream-batch", true}}) {
        const Cell* ours = find_cell(r, Test::throughput, Mode::spin, 64, variant);
        for (const auto& [peer, target] :
             {std::pair<std::string_view, double>{"zmq", 10.0}, {"iceoryx", 20.0}}) {
            const Cell* other = find_cell(r, Test::throughput, Mode::spin, 64, peer);
            if (ours != nullptr && other != nullptr && median_rate(*other) > 0)
                add(cat("throughput 64 B spin: ", variant, " / ", peer, info ? " (info)" : ""),
                    median_rate(*ours) / median_rate(*other), target, true);
        }
    }
    const Cell* rtt_ice = find_cell(r, Test::roundtrip, Mode::spin, 64, "iceoryx");
    if (rtt != nullptr && rtt_ice != nullptr && median_p50(*rtt_ice) > 0)
        add("round trip p50 64 B spin: shmctx / iceoryx", median_p50(*rtt) / median_p50(*rtt_ice),
            0.25, false);
    // Tail of the spin round trip (meaningful on a quiet run only).
    if (rtt != nullptr && median_p50(*rtt) > 0)
        add("round trip p99 / p50 64 B spin: shmctx (quiet run)",
            stat_of(rtt->rtt, [](const RoundTripRun& x) { return x.p99; }).median /
                median_p50(*rtt),
            3.0, false);
    // Fixed rate: p99.9 (corrected) at 1M msg/s against that at 10k msg/s, spin.
    auto fixed_p999 = [&](double rate) -> double {
        for (const Batch& b : r.batches) {
            if (b.test != Test::fixed_rate || b.mode != Mode::spin || b.rate != rate) continue;
            for (const Cell& c : b.cells)
                if (c.transport == "shmctx")
                    return stat_of_fixed(c.fixed,
                                         [](const FixedRateRun& x) { return x.corrected.p999; })
                        .median;
        }
        return std::numeric_limits<double>::quiet_NaN();
    };
    if (fixed_p999(10'000) > 0)
        add("fixed rate p99.9 spin: shmctx 1M/s / 10k/s",
            fixed_p999(1'000'000) / fixed_p999(10'000), 2.0, false);
    // Context round trip and cancel latency against the ring's blocking round trip. The cancel
    // test runs its actors with the library's defaults (blocking mode).
    if (r.cancel && rtt_b != nullptr && median_p50(*rtt_b) > 0) {
        const double ring = median_p50(*rtt_b);
        add("context round trip p50 / ring round trip p50 64 B block", r.cancel->context.p50 / ring,
            6.0, false);
        add("cancel p50 (parked in receive) / ring round trip p50 block", r.cancel->park.p50 / ring,
            4.0, false);
        add("cancel p50 (both rings full) / ring round trip p50 block", r.cancel->full.p50 / ring,
            4.0, false);
    }
    // Spill: send() while spilling (ns), and nothing lost.
    if (r.spill && r.spill->send_spilling.samples > 0)
        add("spill: try_send p99.9 while spilling, us", r.spill->send_spilling.p999 / 1000.0, 5.0,
            false);
    if (r.spill) add("spill: messages lost", static_cast<double>(r.spill->lost), 0.0, false);
    return out;
}

std::string format_ns(double ns) { return dur(ns); }

std::string format_rate(double per_s) {
    char buf[32];
    if (per_s >= 1e6 && std::fmod(per_s, 1e6) == 0)
        std::snprintf(buf, sizeof buf, "%.0fM/s", per_s / 1e6);
    else if (per_s >= 1e3 && std::fmod(per_s, 1e3) == 0)
        std::snprintf(buf, sizeof buf, "%.0fk/s", per_s / 1e3);
    else
        return si(per_s) + "/s";
    return buf;
}

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
        out << "\n" << to_string(b.test) << "  " << size_text(b.size) << "  " << to_string(b.mode);
        if (b.test == Test::fixed_rate) out << "  " << format_rate(b.rate);
        out << "   [c2c round trip " << dur(b.c2c.median_ns) << ", memcpy " << std::fixed
            << std::setprecision(1) << b.memcpy.gbytes_per_s << " GB/s]\n";
        char line[256];
        if (b.test == Test::fixed_rate) {
            print_fixed_rate(b, out);
        } else if (b.test == Test::throughput) {
            std::snprintf(line, sizeof line, "  %-19s %10s %21s %10s\n", "transport", "msg/s",
                          "(min - max)", "MB/s");
            out << line;
            for (const Cell& c : b.cells) {
                const Stat s = summarize(c.msgs_per_s);
                const std::string range = cat("(", si(s.min), " - ", si(s.max), ")");
                std::snprintf(line, sizeof line, "  %-19s %10s %21s %10.0f\n", c.transport.c_str(),
                              si(s.median).c_str(), range.c_str(),
                              s.median * static_cast<double>(b.size) / 1e6);
                out << line;
            }
        } else {
            std::snprintf(line, sizeof line, "  %-19s %9s %9s %9s %9s %9s %21s\n", "transport",
                          "p50", "p90", "p99", "p99.9", "max", "p50 (min - max)");
            out << line;
            for (const Cell& c : b.cells) {
                const Stat p50 = stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; });
                const std::string range = cat("(", dur(p50.min), " - ", dur(p50.max), ")");
                std::snprintf(
                    line, sizeof line, "  %-19s %9s %9s %9s %9s %9s %21s\n", c.transport.c_str(),
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
            std::snprintf(line, sizeof line, "  %-19s %8.3f %%\n", i.transport.c_str(),
                          i.cpu_percent);
            out << line;
        }
    }
    if (r.spill) print_spill(*r.spill, out);
    if (r.cancel) print_cancel(*r.cancel, out);
    const auto targets = check_targets(r);
    if (!targets.empty()) {
        out << "\nDESIGN.md §8 targets (ratios of medians within one batch)\n";
        for (const TargetCheck& t : targets) {
            char line[256];
            std::snprintf(line, sizeof line, "  %-62s %8.3f  %s %-5g %s\n", t.what.c_str(), t.value,
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
      << ", \"tests\": " << list_json(o.tests, [](Test t) { return cat("\"", to_string(t), "\""); })
      << ", \"rates\": " << list_json(o.rates, num)
      << ", \"fixed_rate_ms\": " << o.fixed_rate_duration.count()
      << ", \"fixed_rate_size\": " << o.fixed_rate_size << ", \"transports\": "
      << list_json(o.transports,
                   [](const std::string& t) { return cat("\"", json_escape(t), "\""); })
      << "},\n  \"batches\": [";
    for (std::size_t bi = 0; bi < r.batches.size(); ++bi) {
        const Batch& b = r.batches[bi];
        j << (bi ? ",\n" : "\n") << "    {\"test\": \"" << to_string(b.test) << "\", \"mode\": \""
          << to_string(b.mode) << "\", \"size\": " << b.size;
        if (b.test == Test::fixed_rate) j << ", \"rate\": " << num(b.rate);
        j << ", \"c2c_rtt_ns\": {\"median\": " << num(b.c2c.median_ns)
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
            } else if (b.test == Test::fixed_rate) {
                auto field = [&](const char* name, auto f) {
                    j << ", \"" << name << "\": " << stat_json(stat_of_fixed(c.fixed, f));
                };
                field("p50_ns", [](const FixedRateRun& x) { return x.corrected.p50; });
                field("p90_ns", [](const FixedRateRun& x) { return x.corrected.p90; });
                field("p99_ns", [](const FixedRateRun& x) { return x.corrected.p99; });
                field("p999_ns", [](const FixedRateRun& x) { return x.corrected.p999; });
                field("p9999_ns", [](const FixedRateRun& x) { return x.corrected.p9999; });
                field("max_ns", [](const FixedRateRun& x) { return x.corrected.max; });
                field("uncorrected_p999_ns",
                      [](const FixedRateRun& x) { return x.uncorrected.p999; });
                field("uncorrected_max_ns",
                      [](const FixedRateRun& x) { return x.uncorrected.max; });
                j << ",\n        \"runs\": "
                  << list_json(c.fixed,
                               [](const FixedRateRun& x) {
                                   return cat("{\"corrected\": ", rtt_json(x.corrected),
                                              ", \"uncorrected\": ", rtt_json(x.uncorrected),
                                              ", \"late\": ", std::to_string(x.late),
                                              ", \"unsent\": ", std::to_string(x.unsent),
                                              ", \"achieved_msgs_per_s\": ", num(x.achieved), "}");
                               })
                  << ",\n        \"curve\": " << list_json(c.curve, [](const CurvePoint& p) {
                         return cat("[", num(p.percentile), ", ", num(p.ns), "]");
                     });
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
    j << "],\n  \"spill\": ";
    if (r.spill) {
        const SpillResult& s = *r.spill;
        const SpillOptions& so = s.options;
        j << "{\"producer_rate\": " << num(so.producer_rate)
          << ", \"consumer_rate\": " << num(so.slow_rate())
          << ", \"duration_ms\": " << so.duration.count() << ", \"msg_bytes\": " << so.msg_bytes
          << ", \"overrun_after\": " << s.overrun_after << ", \"overrun_what\": \""
          << json_escape(s.overrun_what) << "\", \"sent\": " << s.sent
          << ", \"received\": " << s.received << ", \"lost\": " << s.lost
          << ", \"spilled\": " << s.spilled << ", \"drained\": " << s.drained
          << ", \"discarded\": " << s.discarded << ", \"high_water\": " << s.high_water
          << ",\n    \"send_while_spilling\": " << rtt_json(s.send_spilling)
          << ", \"send_all\": " << rtt_json(s.send_all)
          << ",\n    \"drain_rate_msgs_per_s\": " << num(s.drain_rate)
          << ", \"drainer_cpu_percent\": "  // null: not measured
          << num(s.drainer_cpu_pct >= 0 ? s.drainer_cpu_pct
                                        : std::numeric_limits<double>::quiet_NaN())
          << ", \"sender_minor_faults\": " << s.sender_faults
          << ", \"sender_preemptions\": " << s.sender_switches
          << ",\n    \"sample_ms\": " << so.sample_every.count() << ", \"depth\": "
          << list_json(s.depth,
                       [](const SpillSample& d) {
                           return cat("[", num(d.t_ms), ", ", std::to_string(d.depth), "]");
                       })
          << "}";
    } else {
        j << "null";
    }
    j << ",\n  \"cancel\": ";
    if (r.cancel) {
        j << "{\"iterations\": " << r.cancel->options.iterations
          << ", \"cancel_after_us\": " << r.cancel->options.cancel_after.count()
          << ", \"context\": " << rtt_json(r.cancel->context)
          << ", \"park\": " << rtt_json(r.cancel->park)
          << ", \"full\": " << rtt_json(r.cancel->full) << "}";
    } else {
        j << "null";
    }
    j << ",\n  \"targets\": [";
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

void run_and_report(const Options& options, Program program, std::ostream& out,
                    std::ostream& progress) {
    if (options.help) {
        out << usage(program);
        return;
    }
    if (options.list) {
        for (const auto& t : transports()) out << t.name << "\t" << t.description << "\n";
        return;
    }
    const Report report = run(options, progress);
    print_table(report, out);
    if (!options.json_path.empty()) {
        write_json(report, options.json_path);
        out << "\nwrote " << options.json_path << "\n";
    }
    if (!options.svg_path.empty()) {
        write_svg(report, options.svg_path);
        out << "wrote " << options.svg_path << "\n";
    }
}

}  // namespace shmctx::bench
