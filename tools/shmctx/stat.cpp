// `shmctx stat`: AeronStat-style live view of actors' counters (DESIGN.md §6, §7;
// docs/protocol.d/cli.md §4). Every --interval it reads what `ls` reads (inspect.hpp: read-only,
// never joins, never writes) plus each actor's counters table (actor_counters.hpp), and prints
// per actor its counters and per ring its counters with rates: the change per second since the
// previous sample of the same ring.
//
// Ctrl-C: SIGINT and SIGTERM are blocked and waited for with sigtimedwait between samples (no
// handler, no flag polled), so a signal ends the wait at once and the tool exits 0 after the
// sample it printed last.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "inspect.hpp"
#include "shmctx/shm/actor_counters.hpp"

namespace shmctx::cli {
namespace {

constexpr std::uint64_t kDefaultIntervalMs = 1000;
constexpr std::uint64_t kMaxIntervalMs = 3'600'000;
constexpr std::uint64_t kMaxCount = 1'000'000'000;

/// What the previous sample saw of one ring, keyed by ring_key().
struct Previous {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t at_ns = 0;
};

/// A ring is the same ring across samples while its arena, carve order and generation are.
std::string ring_key(const Row& row, const LinkStats& link, std::size_t index, const RingStats& r) {
    return row.ns + "/" + row.name + "/" + link.arena + "/" + std::to_string(index) + "/" +
           std::to_string(r.generation);
}

/// Change per second of a monotonic counter; nullopt without a previous sample, or if it went
/// backwards (a new ring under the same key) or no time passed.
std::optional<double> rate(std::uint64_t now, std::uint64_t before, std::uint64_t dt_ns) {
    if (dt_ns == 0 || now < before) return std::nullopt;
    return static_cast<double>(now - before) * 1e9 / static_cast<double>(dt_ns);
}

std::string fmt_rate(const std::optional<double>& r, bool json) {
    if (!r) return json ? "null" : "-";
    char buf[48];
    std::snprintf(buf, sizeof buf, "%.1f", *r);
    return buf;
}

struct RingRates {
    std::optional<double> sent;
    std::optional<double> received;
};

/// One sample: rows, their counters, and the rates against `prev` (updated for the next one).
struct Sample {
    std::vector<Row> rows;
    std::vector<std::optional<shm::ActorCountersSample>> counters;
    std::vector<std::string> counter_problems;
    std::map<std::string, RingRates> rates;
    std::uint64_t mono_ns = 0;
};

Sample take_sample(const std::vector<std::string>& namespaces, uid_t euid,
                   std::vector<std::string>& skipped, std::map<std::string, Previous>& prev) {
    Sample s;
    s.rows = collect_rows(namespaces, euid, skipped);
    s.mono_ns = mono_now_ns();
    std::map<std::string, Previous> next;
    for (const Row& row : s.rows) {
        std::string problem;
        std::optional<shm::ActorCountersSample> c;
        if (row.segment) c = shm::read_actor_counters(row.segment->counters(), problem);
        s.counters.push_back(c);
        s.counter_problems.push_back(row.segment ? problem : std::string());
        if (!row.links) continue;
        for (const LinkStats& link : *row.links) {
            for (std::size_t i = 0; i < link.rings.size(); ++i) {
                const RingStats& r = link.rings[i];
                const std::string key = ring_key(row, link, i, r);
                RingRates rr;
                if (const auto it = prev.find(key);
                    it != prev.end() && s.mono_ns > it->second.at_ns) {
                    const std::uint64_t dt = s.mono_ns - it->second.at_ns;
                    rr.sent = rate(r.counters.sent, it->second.sent, dt);
                    rr.received = rate(r.counters.received, it->second.received, dt);
                }
                s.rates[key] = rr;
                next[key] = Previous{r.counters.sent, r.counters.received, s.mono_ns};
            }
        }
    }
    prev = std::move(next);
    return s;
}

std::uint64_t unix_now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string json_sample(const Sample& s, std::uint64_t number) {
    std::string out = "{\"sample\":" + std::to_string(number);
    out += ",\"mono_ns\":" + std::to_string(s.mono_ns);
    out += ",\"unix_ns\":" + std::to_string(unix_now_ns()) + ",\"actors\":[";
    for (std::size_t a = 0; a < s.rows.size(); ++a) {
        const Row& row = s.rows[a];
        if (a > 0) out += ",";
        out += "{\"ns\":" + json_string(row.ns) + ",\"name\":" + json_string(row.name);
        out += ",\"state\":" + json_string(row.state);
        out += ",\"pid\":" + (row.segment ? std::to_string(row.segment->info().pid) : "null");
        out += R"(,"heartbeat":{"beats":)" + json_u64(row.beats) + R"(,"age_ns":)" +
               json_u64(row.beat_age_ns) + "}";
        out += ",\"counters\":";
        if (const auto& c = s.counters[a]) {
            out += "{";
            for (std::uint32_t i = 0; i < c->known; ++i) {
                if (i > 0) out += ",";
                out += json_string(shm::actor_counter_name(i)) + ":" + std::to_string(c->values[i]);
            }
            out += "}";
        } else {
            out += "null";
        }
        out += ",\"counters_problem\":" +
               (s.counter_problems[a].empty() ? "null" : json_string(s.counter_problems[a]));
        out += ",\"links\":[";
        if (row.links) {
            for (std::size_t l = 0; l < row.links->size(); ++l) {
                const LinkStats& link = (*row.links)[l];
                if (l > 0) out += ",";
                out += "{\"arena\":" + json_string(link.arena) +
                       ",\"peer\":" + json_string(link.peer) + ",\"rings\":[";
                for (std::size_t i = 0; i < link.rings.size(); ++i) {
                    if (i > 0) out += ",";
                    const RingStats& r = link.rings[i];
                    const RingRates& rr = s.rates.at(ring_key(row, link, i, r));
                    std::string ring = json_ring(r);
                    ring.pop_back();  // '}'
                    ring += ",\"sent_per_s\":" + fmt_rate(rr.sent, true);
                    ring += ",\"received_per_s\":" + fmt_rate(rr.received, true) + "}";
                    out += ring;
                }
                out +=
                    "],\"problem\":" + (link.problem ? json_string(*link.problem) : "null") + "}";
            }
        }
        out += "],\"problems\":[";
        for (std::size_t i = 0; i < row.problems.size(); ++i) {
            if (i > 0) out += ",";
            out += json_string(row.problems[i]);
        }
        out += "]}";
    }
    return out + "]}\n";
}

std::string text_sample(const Sample& s, std::uint64_t number, std::size_t namespaces) {
    std::string out;
    char line[512];
    std::snprintf(line, sizeof line, "shmctx stat: sample %llu, %zu actor%s in %zu namespace%s\n",
                  static_cast<unsigned long long>(number), s.rows.size(),
                  s.rows.size() == 1 ? "" : "s", namespaces, namespaces == 1 ? "" : "s");
    out += line;
    for (std::size_t a = 0; a < s.rows.size(); ++a) {
        const Row& row = s.rows[a];
        const std::string pid = row.segment ? std::to_string(row.segment->info().pid) : "-";
        const std::string age =
            row.beat_age_ns ? std::to_string(*row.beat_age_ns / 1'000'000) + " ms" : "-";
        std::snprintf(line, sizeof line, "\n%s/%s  pid %s  %s  heartbeat age %s\n",
                      printable(row.ns).c_str(), printable(row.name).c_str(), pid.c_str(),
                      row.state.c_str(), age.c_str());
        out += line;
        if (const auto& c = s.counters[a]) {
            // Three counters per line: 24 of them fit on a screen with the rings below.
            for (std::uint32_t i = 0; i < c->known; ++i) {
                const std::string_view name = shm::actor_counter_name(i);
                std::snprintf(line, sizeof line, "  %-21.*s %10llu", static_cast<int>(name.size()),
                              name.data(), static_cast<unsigned long long>(c->values[i]));
                out += line;
                if (i % 3 == 2 || i + 1 == c->known) out += "\n";
            }
        } else if (!s.counter_problems[a].empty()) {
            out += "  ! counters: " + printable(s.counter_problems[a]) + "\n";
        }
        for (const auto& p : row.problems) out += "  ! " + printable(p) + "\n";
        if (!row.links) continue;
        for (const LinkStats& link : *row.links) {
            out += "  link to " + printable(link.peer) + "\n";
            if (link.problem) out += "    ! " + printable(*link.problem) + "\n";
            for (std::size_t i = 0; i < link.rings.size(); ++i) {
                const RingStats& r = link.rings[i];
                const shm::RingCounters& c = r.counters;
                const RingRates& rr = s.rates.at(ring_key(row, link, i, r));
                const std::string fill = r.fill_bytes ? std::to_string(*r.fill_bytes) : "-";
                std::snprintf(
                    line, sizeof line,
                    "    %-7s sent %llu (%s/s) received %llu (%s/s) fill %s/%llu B full %llu "
                    "overruns %llu spill %llu (high %llu)\n",
                    r.control ? "control" : "data", static_cast<unsigned long long>(c.sent),
                    fmt_rate(rr.sent, false).c_str(), static_cast<unsigned long long>(c.received),
                    fmt_rate(rr.received, false).c_str(), fill.c_str(),
                    static_cast<unsigned long long>(r.data_bytes),
                    static_cast<unsigned long long>(c.full_events),
                    static_cast<unsigned long long>(c.overruns),
                    static_cast<unsigned long long>(c.spill_depth()),
                    static_cast<unsigned long long>(c.spill_high_water));
                out += line;
            }
        }
    }
    return out;
}

}  // namespace

int run_stat(std::span<const std::string_view> args) {
    CommonOptions common;
    std::uint64_t interval_ms = kDefaultIntervalMs;
    std::uint64_t count = 0;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (parse_common(args, i, common)) continue;
        if (args[i] == "--interval" || args[i] == "--count") {
            if (i + 1 >= args.size()) {
                throw UsageError(std::string(args[i]) + " needs a number");
            }
            const std::string_view what = args[i];
            if (what == "--interval") {
                interval_ms = parse_count(what, args[++i], kMaxIntervalMs);
                if (interval_ms == 0) throw UsageError("--interval must be at least 1 ms");
            } else {
                count = parse_count(what, args[++i], kMaxCount);
            }
            continue;
        }
        throw UsageError("stat: unknown option '" + std::string(args[i]) + "'");
    }
    const uid_t euid = ::geteuid();

    // Block them before the first sample, so that a Ctrl-C at any time is seen by the wait.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (::sigprocmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
        throw std::runtime_error("sigprocmask failed");
    }
    const bool clear = !common.json && ::isatty(STDOUT_FILENO) == 1;
    std::map<std::string, Previous> prev;
    for (std::uint64_t n = 1;; ++n) {
        std::vector<std::string> skipped;
        const std::vector<std::string> namespaces = selected_namespaces(common, euid, skipped);
        const Sample s = take_sample(namespaces, euid, skipped, prev);
        std::string out = common.json ? json_sample(s, n) : text_sample(s, n, namespaces.size());
        if (clear) out = "\033[H\033[2J" + out;  // AeronStat-style: redraw in place
        std::fputs(out.c_str(), stdout);
        std::fflush(stdout);
        for (const auto& note : skipped) {
            std::fprintf(stderr, "note: %s\n", printable(note).c_str());
        }
        if (count != 0 && n >= count) break;
        // The sampling period (not synchronisation); a stop signal ends it at once.
        timespec ts{static_cast<time_t>(interval_ms / 1000),
                    static_cast<long>((interval_ms % 1000) * 1'000'000)};
        int sig = -1;
        do {
            sig = ::sigtimedwait(&stop_signals, nullptr, &ts);
        } while (sig < 0 && errno == EINTR);
        if (sig == SIGINT || sig == SIGTERM) break;
    }
    return kExitOk;
}

}  // namespace shmctx::cli
