// `shmctx`: inspect and clean the shared-memory objects of shmctx actors, and measure (DESIGN.md
// §7; output formats and exit codes in docs/protocol.d/cli.md). `ls` and `clean` never join as
// an actor; `perf` runs the benchmark harness in its own namespace.
#include <cstdio>
#include <exception>
#include <string_view>
#include <vector>

#include "common.hpp"

namespace {

constexpr std::string_view kUsage =
    "usage: shmctx <command> [options]\n"
    "\n"
    "commands:\n"
    "  ls     [--ns NS | --all-ns] [--json] [--sample MS]\n"
    "         list actors: pid, uuid, liveness, heartbeat, links, outbound ring counters;\n"
    "         --sample MS watches heartbeats for MS ms and reports a live actor whose\n"
    "         heartbeat did not move as unresponsive\n"
    "  stat   [--ns NS | --all-ns] [--json] [--interval MS] [--count N]\n"
    "         live view of each actor's counters and of its rings (sent/received with\n"
    "         rates, fill, overruns, spill) every MS ms (default 1000), N times (default\n"
    "         0: until Ctrl-C); --json prints one JSON object per sample, one per line\n"
    "  errors [--ns NS | --all-ns] [--json]\n"
    "         each actor's distinct-error log (count, first and last time, text), also of\n"
    "         dead actors whose segment is still in /dev/shm\n"
    "  clean  [--ns NS | --all-ns] [--json] [--dry-run]\n"
    "         remove what dead actors (actor file lock free) left in /dev/shm\n"
    "  perf   [--tests LIST] [--transports LIST] [--quick] [--json FILE] [--svg FILE] ...\n"
    "         the benchmark harness: throughput, round trip, fixed-rate latency (coordinated-\n"
    "         omission corrected), spill/overrun under a slow consumer, cancel latency;\n"
    "         'shmctx perf --help' lists every option\n"
    "\n"
    "The namespace defaults to $SHMCTX_NS, else \"default\". Only objects of the effective uid\n"
    "are looked at (ls, stat, errors, clean). Exit status: 0 success, 1 error, 2 usage error.\n";

}  // namespace

int main(int argc, char** argv) {
    using namespace shmctx::cli;
    const std::vector<std::string_view> args(argv + (argc > 0 ? 1 : 0), argv + argc);
    // A peer process of `shmctx perf` (the harness spawns /proc/self/exe --role ...).
    if (is_perf_peer(args)) return run_perf_peer(args);
    if (args.empty()) {
        std::fputs(kUsage.data(), stderr);
        return kExitUsage;
    }
    const std::string_view command = args.front();
    const std::span<const std::string_view> rest(args.data() + 1, args.size() - 1);
    try {
        if (command == "ls") return run_ls(rest);
        if (command == "clean") return run_clean(rest);
        if (command == "stat") return run_stat(rest);
        if (command == "errors") return run_errors(rest);
        if (command == "perf") return run_perf(rest);
        if (command == "help" || command == "--help" || command == "-h") {
            std::fputs(kUsage.data(), stdout);
            return kExitOk;
        }
        throw UsageError("unknown command '" + std::string(command) + "'");
    } catch (const UsageError& e) {
        std::fprintf(stderr, "shmctx: %s\nrun 'shmctx help' for usage\n", e.what());
        return kExitUsage;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx %.*s: %s\n", static_cast<int>(command.size()), command.data(),
                     e.what());
        return kExitError;
    }
}
