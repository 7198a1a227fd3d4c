// `shmctx errors`: each actor's distinct-error log (error_log.hpp; DESIGN.md §6;
// docs/protocol.d/cli.md §5). Read-only like `ls` (inspect.hpp); it reads the log of every
// actor whose segment is still in /dev/shm, live or dead, since the log outlives its writer
// until `clean` (or a peer's reclaim) removes the segment.
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "inspect.hpp"
#include "shmctx/shm/error_log.hpp"

namespace shmctx::cli {
namespace {

/// "2026-11-30T08:20:01.123Z" (UTC, ms).
std::string iso_time(std::uint64_t unix_ns) {
    const auto secs = static_cast<time_t>(unix_ns / 1'000'000'000u);
    tm t{};
    if (::gmtime_r(&secs, &t) == nullptr) return "?";
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", t.tm_year + 1900,
                  t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                  static_cast<unsigned>(unix_ns / 1'000'000u % 1000u));
    return buf;
}

struct ActorLog {
    const Row* row = nullptr;
    std::optional<shm::ErrorLogSample> log;  ///< nullopt: no segment to read
};

std::string json_actor(const ActorLog& a) {
    const Row& row = *a.row;
    std::string out = "{\"ns\":" + json_string(row.ns) + ",\"name\":" + json_string(row.name);
    out += ",\"state\":" + json_string(row.state);
    if (row.segment) {
        out += ",\"pid\":" + std::to_string(row.segment->info().pid);
        out += ",\"uuid\":" + json_string(row.segment->info().uuid.to_hex());
    } else {
        out += R"(,"pid":null,"uuid":null)";
    }
    if (!a.log || !a.log->valid) {
        const std::string why = a.log ? a.log->problem : "no segment to read";
        out += R"(,"capacity":null,"used":null,"dropped":null,"reports":null,"errors":null)";
        out += ",\"problem\":" + json_string(why) + ",\"skipped\":[]}";
        return out;
    }
    const shm::ErrorLogSample& log = *a.log;
    out += ",\"capacity\":" + std::to_string(log.capacity);
    out += ",\"used\":" + std::to_string(log.used);
    out += ",\"dropped\":" + std::to_string(log.dropped);
    out += ",\"reports\":" + std::to_string(log.reports) + ",\"errors\":[";
    for (std::size_t i = 0; i < log.entries.size(); ++i) {
        const shm::ErrorEntry& e = log.entries[i];
        if (i > 0) out += ",";
        out += "{\"count\":" + std::to_string(e.count);
        out += ",\"first_unix_ns\":" + std::to_string(e.first_unix_ns);
        out += ",\"last_unix_ns\":" + std::to_string(e.last_unix_ns);
        out += ",\"first\":" + json_string(iso_time(e.first_unix_ns));
        out += ",\"last\":" + json_string(iso_time(e.last_unix_ns));
        out += std::string(",\"truncated\":") + (e.truncated ? "true" : "false");
        out += ",\"text\":" + json_string(e.text) + "}";
    }
    out += "],\"problem\":null,\"skipped\":[";
    for (std::size_t i = 0; i < log.skipped.size(); ++i) {
        if (i > 0) out += ",";
        out += json_string(log.skipped[i]);
    }
    return out + "]}";
}

void print_text(const std::vector<ActorLog>& logs) {
    std::size_t total = 0;
    for (const ActorLog& a : logs) {
        const Row& row = *a.row;
        const std::string pid = row.segment ? std::to_string(row.segment->info().pid) : "-";
        std::printf("%s/%s  pid %s  %s", printable(row.ns).c_str(), printable(row.name).c_str(),
                    pid.c_str(), row.state.c_str());
        if (!a.log || !a.log->valid) {
            std::printf("\n  ! %s\n",
                        printable(a.log ? a.log->problem : "no segment to read").c_str());
            continue;
        }
        const shm::ErrorLogSample& log = *a.log;
        std::printf("  %u distinct error%s, %llu report%s", log.used, log.used == 1 ? "" : "s",
                    static_cast<unsigned long long>(log.reports), log.reports == 1 ? "" : "s");
        if (log.dropped != 0) {
            std::printf(", log full: %llu report%s of new errors dropped",
                        static_cast<unsigned long long>(log.dropped), log.dropped == 1 ? "" : "s");
        }
        std::printf("\n");
        for (const shm::ErrorEntry& e : log.entries) {
            std::printf("  %8llu  %s  %s  %s\n", static_cast<unsigned long long>(e.count),
                        iso_time(e.first_unix_ns).c_str(), iso_time(e.last_unix_ns).c_str(),
                        printable(e.text).c_str());
            ++total;
        }
        for (const auto& s : log.skipped) std::printf("  ! %s\n", printable(s).c_str());
    }
    std::printf("%zu distinct error%s in %zu actor%s\n", total, total == 1 ? "" : "s", logs.size(),
                logs.size() == 1 ? "" : "s");
}

}  // namespace

int run_errors(std::span<const std::string_view> args) {
    CommonOptions common;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (parse_common(args, i, common)) continue;
        throw UsageError("errors: unknown option '" + std::string(args[i]) + "'");
    }
    const uid_t euid = ::geteuid();
    std::vector<std::string> skipped;
    const std::vector<std::string> namespaces = selected_namespaces(common, euid, skipped);
    const std::vector<Row> rows = collect_rows(namespaces, euid, skipped);
    std::vector<ActorLog> logs;
    for (const Row& row : rows) {
        ActorLog a{&row, std::nullopt};
        if (row.segment) a.log = shm::read_error_log(row.segment->error_log());
        logs.push_back(std::move(a));
    }
    if (common.json) {
        std::string out = "[";
        for (std::size_t i = 0; i < logs.size(); ++i) {
            out += i > 0 ? ",\n " : "";
            out += json_actor(logs[i]);
        }
        out += "]\n";
        std::fputs(out.c_str(), stdout);
    } else {
        print_text(logs);
    }
    for (const auto& s : skipped) std::fprintf(stderr, "note: %s\n", printable(s).c_str());
    return kExitOk;
}

}  // namespace shmctx::cli
