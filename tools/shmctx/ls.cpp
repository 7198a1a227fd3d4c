// `shmctx ls`: one row per actor name found in /dev/shm (actor file, segment or tmp segment),
// with what shared memory exposes about it (read by inspect.hpp: a read-only observer that
// never joins as an actor and never writes a byte). Field meanings, the liveness rules and the
// JSON schema: docs/protocol.d/cli.md.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "inspect.hpp"

namespace shmctx::cli {
namespace {

/// Upper bound of --sample (ms).
constexpr std::uint64_t kMaxSampleMs = 60'000;

/// Live rows whose heartbeat does not move over `sample_ms` become "unresponsive".
void sample_heartbeats(std::vector<Row>& rows, std::uint64_t sample_ms) {
    timespec ts{static_cast<time_t>(sample_ms / 1000),
                static_cast<long>((sample_ms % 1000) * 1'000'000)};
    // A sampling window, not synchronisation: we measure progress over a span of time.
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    for (auto& row : rows) {
        if (row.state != "live" || !row.segment || !row.beats || *row.beats == 0) continue;
        // relaxed: as in probe().
        const std::uint64_t beats = row.segment->heartbeat().beats.load(std::memory_order::relaxed);
        if (beats == *row.beats) row.state = "unresponsive";
        row.beats = beats;
    }
}

std::string opt(const std::optional<std::uint64_t>& v) {
    return v ? std::to_string(*v) : std::string("-");
}

void print_text(const std::vector<Row>& rows, const std::vector<std::string>& skipped,
                std::size_t namespaces) {
    using Cells = std::vector<std::string>;
    std::vector<Cells> table;
    table.push_back({"NAMESPACE", "NAME", "PID", "UUID", "STATE", "BEATS", "AGE_MS", "LINKS",
                     "RINGS", "SENT", "RECEIVED", "IN_FLIGHT", "FULL", "OVERRUNS", "SPILL"});
    for (const auto& row : rows) {
        Cells cells{row.ns, row.name};
        if (row.segment) {
            const auto& info = row.segment->info();
            cells.push_back(std::to_string(info.pid));
            cells.push_back(info.uuid.short_hex());
        } else {
            cells.insert(cells.end(), {"-", "-"});
        }
        cells.push_back(row.state);
        cells.push_back(opt(row.beats));
        cells.push_back(row.beat_age_ns ? std::to_string(*row.beat_age_ns / 1'000'000) : "-");
        if (row.links) {
            const Totals t = totals_of(*row.links);
            for (const std::uint64_t v :
                 {std::uint64_t{t.links}, std::uint64_t{t.rings}, t.sent, t.received, t.in_flight,
                  t.full_events, t.overruns, t.spill_depth}) {
                cells.push_back(std::to_string(v));
            }
        } else {
            cells.insert(cells.end(), 8, "-");
        }
        table.push_back(std::move(cells));
    }
    std::vector<std::size_t> width(table.front().size(), 0);
    for (const auto& cells : table) {
        for (std::size_t i = 0; i < cells.size(); ++i)
            width[i] = std::max(width[i], cells[i].size());
    }
    std::size_t r = 0;
    for (const auto& cells : table) {
        std::string line;
        for (std::size_t i = 0; i < cells.size(); ++i) {
            line += cells[i];
            if (i + 1 < cells.size()) line.append(width[i] - cells[i].size() + 2, ' ');
        }
        std::printf("%s\n", line.c_str());
        if (r > 0) {
            const Row& row = rows[r - 1];
            for (const auto& p : row.problems) std::printf("  ! %s\n", printable(p).c_str());
            if (row.links) {
                for (const auto& l : *row.links) {
                    if (l.problem)
                        std::printf("  ! arena %s: %s\n", printable(l.arena).c_str(),
                                    printable(*l.problem).c_str());
                }
            }
        }
        ++r;
    }
    for (const auto& s : skipped) std::printf("note: %s\n", printable(s).c_str());
    std::size_t live = 0;
    for (const auto& row : rows) live += row.state == "live" ? 1u : 0u;
    std::printf("%zu actor%s (%zu live) in %zu namespace%s\n", rows.size(),
                rows.size() == 1 ? "" : "s", live, namespaces, namespaces == 1 ? "" : "s");
}

std::string json_row(const Row& row) {
    std::string out = "{\"ns\":" + json_string(row.ns) + ",\"name\":" + json_string(row.name);
    out += ",\"state\":" + json_string(row.state);
    if (row.segment) {
        const auto& info = row.segment->info();
        out += ",\"pid\":" + std::to_string(info.pid);
        out += ",\"uuid\":" + json_string(info.uuid.to_hex());
        out += ",\"start_time\":" + std::to_string(info.start_time);
        out += ",\"created_unix_ns\":" + std::to_string(info.created_unix_ns);
    } else {
        out += R"(,"pid":null,"uuid":null,"start_time":null,"created_unix_ns":null)";
    }
    out += R"(,"heartbeat":{"beats":)" + json_u64(row.beats) + R"(,"age_ns":)" +
           json_u64(row.beat_age_ns) + "}";
    if (row.links) {
        out += ",\"links\":" + std::to_string(row.links->size()) + ",\"arenas\":[";
        for (std::size_t i = 0; i < row.links->size(); ++i) {
            const LinkStats& l = (*row.links)[i];
            if (i > 0) out += ",";
            out += "{\"name\":" + json_string(l.arena) + ",\"peer\":" + json_string(l.peer);
            out += ",\"carves\":" + std::to_string(l.carves) + ",\"rings\":[";
            for (std::size_t j = 0; j < l.rings.size(); ++j) {
                if (j > 0) out += ",";
                out += json_ring(l.rings[j]);
            }
            out += "],\"problem\":" + (l.problem ? json_string(*l.problem) : "null") + "}";
        }
        out += "]";
    } else {
        out += R"(,"links":null,"arenas":null)";
    }
    out += ",\"problems\":[";
    for (std::size_t i = 0; i < row.problems.size(); ++i) {
        if (i > 0) out += ",";
        out += json_string(row.problems[i]);
    }
    return out + "]}";
}

}  // namespace

int run_ls(std::span<const std::string_view> args) {
    CommonOptions common;
    std::uint64_t sample_ms = 0;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (parse_common(args, i, common)) continue;
        if (args[i] == "--sample") {
            if (i + 1 >= args.size()) throw UsageError("--sample needs a number of milliseconds");
            sample_ms = parse_count("--sample", args[++i], kMaxSampleMs);
            continue;
        }
        throw UsageError("ls: unknown option '" + std::string(args[i]) + "'");
    }
    const uid_t euid = ::geteuid();
    std::vector<std::string> skipped;
    const std::vector<std::string> namespaces = selected_namespaces(common, euid, skipped);

    std::vector<Row> rows = collect_rows(namespaces, euid, skipped);
    if (sample_ms > 0) sample_heartbeats(rows, sample_ms);

    if (common.json) {
        std::string out = "[";
        for (std::size_t i = 0; i < rows.size(); ++i) {
            out += i > 0 ? ",\n " : "";
            out += json_row(rows[i]);
        }
        out += "]\n";
        std::fputs(out.c_str(), stdout);
        for (const auto& s : skipped) std::fprintf(stderr, "note: %s\n", printable(s).c_str());
    } else {
        print_text(rows, skipped, namespaces.size());
    }
    return kExitOk;
}

}  // namespace shmctx::cli
