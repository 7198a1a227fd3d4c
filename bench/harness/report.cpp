// The harness report: a human table and JSON.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <utility>
#include <vector>

#include "harness.hpp"
#include "report_tables.hpp"
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

/// A fixed-rate run kept up with its rate: every message sent within the limit and the
/// achieved rate within 10 % of the rate asked for (a backlog that never empties lowers it).
bool sustained(const FixedRateRun& x, double rate) {
    return x.unsent == 0 && x.achieved >= 0.9 * rate;
}

std::string percent(double v, const char* format = "%.1f%%") {
    char buf[32];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

std::string ratio_text(double v) {
    if (!std::isfinite(v)) return "-";
    char buf[32];
    std::snprintf(buf, sizeof buf, v >= 100 ? "%.0fx" : v >= 10 ? "%.1fx" : "%.2fx", v);
    return buf;
}

/// The cell whose figures the batch's ratio column divides by: `preferred` when the batch has
/// it, else the first.
const Cell* baseline_of(const Batch& b, std::string_view preferred) {
    for (const Cell& c : b.cells)
        if (c.transport == preferred) return &c;
    return b.cells.empty() ? nullptr : &b.cells.front();
}

double median_rate(const Cell& c) { return summarize(c.msgs_per_s).median; }
double median_p50(const Cell& c) {
    return stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; }).median;
}

void throughput_rows(const Batch& b, ReportTable& t) {
    const Cell* base = baseline_of(b, "shmctx-batch");
    t.columns = {"transport", "msg/s", "(min - max)", "MB/s",
                 cat("ratio to ", base != nullptr ? base->transport : "")};
    for (const Cell& c : b.cells) {
        const Stat s = summarize(c.msgs_per_s);
        char mb[32];
        std::snprintf(mb, sizeof mb, "%.0f", s.median * static_cast<double>(b.size) / 1e6);
        t.rows.push_back({c.transport, si(s.median), cat("(", si(s.min), " - ", si(s.max), ")"), mb,
                          ratio_text(s.median / median_rate(*base))});
    }
}

void roundtrip_rows(const Batch& b, ReportTable& t) {
    const Cell* base = baseline_of(b, "shmctx");
    t.columns = {"transport",
                 "p50",
                 "p90",
                 "p99",
                 "p99.9",
                 "max",
                 "p50 (min - max)",
                 cat("p50 ratio to ", base != nullptr ? base->transport : "")};
    for (const Cell& c : b.cells) {
        auto med = [&](auto f) { return dur(stat_of(c.rtt, f).median); };
        const Stat p50 = stat_of(c.rtt, [](const RoundTripRun& x) { return x.p50; });
        t.rows.push_back({c.transport, dur(p50.median),
                          med([](const RoundTripRun& x) { return x.p90; }),
                          med([](const RoundTripRun& x) { return x.p99; }),
                          med([](const RoundTripRun& x) { return x.p999; }),
                          med([](const RoundTripRun& x) { return x.max; }),
                          cat("(", dur(p50.min), " - ", dur(p50.max), ")"),
                          ratio_text(p50.median / median_p50(*base))});
    }
}

void fixed_rate_rows(const Batch& b, ReportTable& t) {
    t.intro =
        "Latency from each message's intended send time (start + i / rate: coordinated-omission "
        "corrected), medians over runs; raw = from the actual send (uncorrected); late = sends "
        "more than 1 us after their time; unsent = messages not sent within 3 x the duration + "
        "min(duration, 1 s) (counted with the time they had waited).";
    t.columns = {"transport", "p50",     "p90",  "p99",      "p99.9",  "p99.99",   "max",
                 "raw p99.9", "raw max", "late", "achieved", "unsent", "sustained"};
    for (const Cell& c : b.cells) {
        auto med = [&](auto f) { return dur(stat_of_fixed(c.fixed, f).median); };
        const double late = stat_of_fixed(c.fixed, [](const FixedRateRun& x) {
                                return x.corrected.samples == 0
                                           ? 0.0
                                           : 100.0 * static_cast<double>(x.late) /
                                                 static_cast<double>(x.corrected.samples);
                            }).median;
        const double achieved =
            stat_of_fixed(c.fixed, [](const FixedRateRun& x) { return x.achieved; }).median;
        const double unsent = stat_of_fixed(c.fixed, [](const FixedRateRun& x) {
                                  return static_cast<double>(x.unsent);
                              }).median;
        std::size_t failed = 0;
        for (const FixedRateRun& x : c.fixed)
            if (!sustained(x, b.rate)) ++failed;
        t.rows.push_back({c.transport, med([](const FixedRateRun& x) { return x.corrected.p50; }),
                          med([](const FixedRateRun& x) { return x.corrected.p90; }),
                          med([](const FixedRateRun& x) { return x.corrected.p99; }),
                          med([](const FixedRateRun& x) { return x.corrected.p999; }),
                          med([](const FixedRateRun& x) { return x.corrected.p9999; }),
                          med([](const FixedRateRun& x) { return x.corrected.max; }),
                          med([](const FixedRateRun& x) { return x.uncorrected.p999; }),
                          med([](const FixedRateRun& x) { return x.uncorrected.max; }),
                          percent(late), cat(si(achieved), "/s"), si(unsent),
                          failed == 0 ? "yes"
                                      : cat("NO (", std::to_string(failed), " of ",
                                            std::to_string(c.fixed.size()), " runs)")});
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
                      "%s: rate not sustained in %zu of %zu runs: a median %.1f%% of the "
                      "messages not sent within 3 x the duration + min(duration, 1 s) (counted "
                      "with the time they had waited)",
                      c.transport.c_str(), runs, c.fixed.size(), 100 * summarize(unsent).median);
        t.notes.emplace_back(note);
    }
}

ReportTable spill_table(const SpillResult& s) {
    const SpillOptions& o = s.options;
    ReportTable t;
    t.title =
        cat("spill under a slow consumer: producer ", format_rate(o.producer_rate), ", consumer ",
            format_rate(o.slow_rate()), " for ", std::to_string(o.duration.count()),
            " ms, then full speed; ", std::to_string(o.msg_bytes), " B messages, 64-message ring");
    t.columns = {"figure", "value"};
    t.text_values = true;
    t.rows.push_back({"overrun (default policy, on_full = raise)",
                      cat("StreamOverrun after ", std::to_string(s.overrun_after), " messages",
                          s.overrun_what.empty() ? "" : cat(" (", s.overrun_what, ")"))});
    t.rows.push_back({"allow_overruns: sent, received in order (consumer-checked), lost",
                      cat(std::to_string(s.sent), ", ", std::to_string(s.received), ", ",
                          std::to_string(s.lost))});
    t.rows.push_back({"spilled, drained, discarded, high water",
                      cat(std::to_string(s.spilled), ", ", std::to_string(s.drained), ", ",
                          std::to_string(s.discarded), ", ", std::to_string(s.high_water))});
    t.rows.push_back({"try_send while spilling",
                      cat("p50 ", dur(s.send_spilling.p50), ", p99 ", dur(s.send_spilling.p99),
                          ", p99.9 ", dur(s.send_spilling.p999), ", max ", dur(s.send_spilling.max),
                          " (", std::to_string(s.send_spilling.samples), " sends)")});
    t.rows.push_back(
        {"every send", cat("p50 ", dur(s.send_all.p50), ", p99.9 ", dur(s.send_all.p999))});
    t.rows.push_back({"drain rate once the consumer is fast", cat(si(s.drain_rate), " msg/s")});
    t.rows.push_back(
        {"sending thread: minor page faults, preemptions",
         cat(std::to_string(s.sender_faults), ", ", std::to_string(s.sender_switches))});
    if (s.drainer_cpu_pct >= 0) {
        char window[32];
        std::snprintf(window, sizeof window, "%.2f s", s.idle_window_s);
        t.rows.push_back({cat("drainer CPU over a ", window, " idle window"),
                          percent(s.drainer_cpu_pct, "%.3f %%")});
    }
    return t;
}

ReportTable cancel_table(const CancelResult& c) {
    ReportTable t;
    t.title =
        cat("cancel latency (ctx.cancel() to its return with the ctxc recorded) and context "
            "round trip (open_context on echo: open, Start, Started, Return), ",
            std::to_string(c.options.iterations), " of each kind",
            c.options.cancel_after.count() > 0
                ? cat(", ", std::to_string(c.options.cancel_after.count()),
                      " us after the parked state")
                : "");
    t.columns = {"call", "p50", "p90", "p99", "p99.9", "max"};
    for (const auto& [what, r] :
         {std::pair<const char*, const RoundTripRun*>{"context round trip", &c.context},
          {"cancel: parked in receive()", &c.park},
          {"cancel: in send(), both rings full", &c.full}}) {
        t.rows.push_back({what, dur(r->p50), dur(r->p90), dur(r->p99), dur(r->p999), dur(r->max)});
    }
    return t;
}

ReportTable targets_table(const std::vector<TargetCheck>& targets) {
    ReportTable t;
    t.title = std::string(kTargetsTitle);
    t.columns = {"target", "measured", "bar", "result"};
    for (const TargetCheck& c : targets) {
        char value[32];
        char bar[32];
        std::snprintf(value, sizeof value, "%.3f", c.value);
        std::snprintf(bar, sizeof bar, "%s %g", c.at_least ? ">=" : "<=", c.target);
        t.rows.push_back({c.what, value, bar, c.info ? "info" : c.met ? "met" : "not met"});
    }
    return t;
}

/// The report's plain-text rendering of one table: columns padded to their widest cell, the
/// first left-aligned, the others right-aligned.
void print_text(const ReportTable& t, std::ostream& out) {
    std::vector<std::size_t> width(t.columns.size(), 0);
    auto widen = [&](const std::vector<std::string>& row) {
        for (std::size_t i = 0; i < row.size() && i < width.size(); ++i)
            width[i] = std::max(width[i], row[i].size());
    };
    widen(t.columns);
    for (const auto& row : t.rows) widen(row);
    auto line = [&](const std::vector<std::string>& row) {
        std::string s = " ";
        for (std::size_t i = 0; i < row.size() && i < width.size(); ++i) {
            const std::string pad(width[i] - row[i].size(), ' ');
            s += i == 0          ? cat(" ", row[i], pad)
                 : t.text_values ? cat("  ", row[i], pad)
                                 : cat("  ", pad, row[i]);
        }
        while (!s.empty() && s.back() == ' ') s.pop_back();
        out << s << "\n";
    };
    line(t.columns);
    for (const auto& row : t.rows) line(row);
    for (const auto& n : t.notes) out << "  " << n << "\n";
}
}  // namespace

std::vector<TargetCheck> check_targets(const Report& r) {
    std::vector<TargetCheck> out;
    auto add = [&](std::string what, double value, double target, bool at_least,
                   bool info = false) {
        if (!std::isfinite(value)) return;
        out.push_back({std::move(what), value, target, at_least,
                       at_least ? value >= target : value <= target, info});
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
                    median_rate(*ours) / median_rate(*other), target, true, info);
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
                    median_rate(*ours) / median_rate(*other), target, true, info);
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

void write_file(const std::string& path, std::string_view text) {
    std::ofstream f(path, std::ios::trunc);
    f << text;
    f.close();
    if (!f) throw SystemError("cannot write " + path + ": " + std::strerror(errno));
}

std::vector<ReportField> report_header(const Report& r) {
    const Options& o = r.options;
    std::vector<ReportField> h;
    h.push_back({"commit", r.commit});
    h.push_back({"date (UTC)", r.date});
    h.push_back({"cpu", cat(r.cpu, " (", std::to_string(r.online_cpus), " online ",
                            r.virtual_cpus ? "vCPUs" : "CPUs", ")")});
    h.push_back({"build", cat(r.build_type, optimised_build(r) ? ""
                                                               : " (WARNING: not an optimised "
                                                                 "build; figures are not "
                                                                 "meaningful)")});
    h.push_back({"placement", r.placement.text});
    std::string runs = cat(std::to_string(o.runs), " x ", std::to_string(o.duration.count()),
                           " ms per transport and batch, interleaved");
    if (std::find(o.tests.begin(), o.tests.end(), Test::fixed_rate) != o.tests.end()) {
        std::string rates;
        for (double rate : o.rates) rates += cat(rates.empty() ? "" : ", ", format_rate(rate));
        runs += cat("; fixed rate ", std::to_string(o.fixed_rate_run_count()), " x ",
                    std::to_string(o.fixed_rate_duration.count()), " ms at ", rates, ", ",
                    std::to_string(o.fixed_rate_size), " B");
    }
    h.push_back({"runs", runs});
    h.push_back({"ring", cat(std::to_string(o.ring_bytes), " B per direction; batch ",
                             std::to_string(o.batch))});
    h.push_back({"figures", "medians over runs, with (min - max)"});
    return h;
}

bool optimised_build(const Report& r) {
    return r.build_type == "Release" || r.build_type == "RelWithDebInfo";
}

std::string batch_title(const Batch& b) {
    std::string t = cat(to_string(b.test), "  ", size_text(b.size), "  ", to_string(b.mode));
    if (b.test == Test::fixed_rate) t += cat("  ", format_rate(b.rate));
    return t;
}

std::string batch_placement(const Batch& b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GB/s", b.memcpy.gbytes_per_s);
    return cat("c2c round trip ", dur(b.c2c.median_ns), " (min ", dur(b.c2c.min_ns), "), memcpy ",
               buf);
}

ReportTable placement_table(const Report& r) {
    ReportTable t;
    t.title = "placement of each section";
    t.intro =
        "The core-to-core cache-line round trip between the two pinned processes (median of "
        "chunk means, and the minimum) and single-thread memcpy bandwidth, measured just before "
        "the section's runs.";
    t.columns = {"section", "c2c round trip", "c2c min", "memcpy GB/s"};
    for (const Batch& b : r.batches) {
        char gbs[32];
        std::snprintf(gbs, sizeof gbs, "%.1f", b.memcpy.gbytes_per_s);
        t.rows.push_back({batch_title(b), dur(b.c2c.median_ns), dur(b.c2c.min_ns), gbs});
    }
    return t;
}

std::vector<ReportTable> report_tables(const Report& r) {
    std::vector<ReportTable> out;
    for (const Batch& b : r.batches) {
        ReportTable t;
        t.title = batch_title(b);
        t.subtitle = batch_placement(b);
        if (b.test == Test::throughput)
            throughput_rows(b, t);
        else if (b.test == Test::fixed_rate)
            fixed_rate_rows(b, t);
        else
            roundtrip_rows(b, t);
        out.push_back(std::move(t));
    }
    if (!r.idle.empty()) {
        ReportTable t;
        t.title = cat("idle CPU of a consumer blocked in receive (block mode, ",
                      std::to_string(r.options.idle_window.count()), " ms window, getrusage)");
        t.columns = {"transport", "CPU"};
        for (const IdleResult& i : r.idle)
            t.rows.push_back({i.transport, percent(i.cpu_percent, "%.3f %%")});
        out.push_back(std::move(t));
    }
    if (r.spill) out.push_back(spill_table(*r.spill));
    if (r.cancel) out.push_back(cancel_table(*r.cancel));
    const auto targets = check_targets(r);
    if (!targets.empty()) out.push_back(targets_table(targets));
    return out;
}

void print_table(const Report& r, std::ostream& out) {
    out << "shmctx perf harness\n";
    for (const ReportField& f : report_header(r)) out << f.name << ": " << f.value << "\n";
    for (const ReportTable& t : report_tables(r)) {
        out << "\n" << t.title;
        if (!t.subtitle.empty()) out << "   [" << t.subtitle << "]";
        out << "\n";
        if (!t.intro.empty()) out << "  " << t.intro << "\n";
        print_text(t, out);
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
      << "  \"online_cpus\": " << r.online_cpus
      << ", \"virtual_cpus\": " << (r.virtual_cpus ? "true" : "false") << ",\n"
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
      << ", \"fixed_rate_size\": " << o.fixed_rate_size
      << ", \"fixed_rate_runs\": " << o.fixed_rate_run_count() << ", \"transports\": "
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
                               [&b](const FixedRateRun& x) {
                                   return cat("{\"corrected\": ", rtt_json(x.corrected),
                                              ", \"uncorrected\": ", rtt_json(x.uncorrected),
                                              ", \"late\": ", std::to_string(x.late),
                                              ", \"unsent\": ", std::to_string(x.unsent),
                                              ", \"achieved_msgs_per_s\": ", num(x.achieved),
                                              ", \"sustained\": ",
                                              sustained(x, b.rate) ? "true" : "false", "}");
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
          << ", \"met\": " << (t.met ? "true" : "false")
          << ", \"info\": " << (t.info ? "true" : "false") << "}";
    }
    j << "]\n}\n";
    write_file(path, j.str());
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
    std::ostringstream table;
    print_table(report, table);
    out << table.str();
    std::vector<std::string> wrote;
    auto write = [&](const std::string& path, auto writer) {
        if (path.empty()) return;
        writer(report, path);
        wrote.push_back(path);
    };
    write(options.json_path, write_json);
    write(options.svg_path, write_svg);
    write(options.md_path, write_markdown);
    if (!options.save_dir.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(options.save_dir, ec);
        if (ec) throw SystemError(cat("cannot create ", options.save_dir, ": ", ec.message()));
        const std::string stem = cat(options.save_dir, "/", result_stem(report));
        write(cat(stem, ".txt"),
              [&table](const Report&, const std::string& path) { write_file(path, table.str()); });
        write(cat(stem, ".md"), write_markdown);
        write(cat(stem, ".json"), write_json);
        write(cat(stem, ".svg"), write_svg);
    }
    if (!wrote.empty()) out << "\n";
    for (const std::string& path : wrote) out << "wrote " << path << "\n";
}

}  // namespace shmctx::bench
