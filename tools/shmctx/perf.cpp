// `shmctx perf`: the front end of the benchmark harness (bench/harness, harness.hpp). The
// options, the table, the JSON and the SVG are the harness library's; this file routes the
// command line and the exit status (docs/protocol.d/cli.md §7).
//
// The harness measures across real processes: it posix_spawns /proc/self/exe (this binary)
// with `--role ...`; main() hands such a command line to run_perf_peer before any dispatch.
#include <atomic>
#include <iostream>
#include <stdexcept>

#include "common.hpp"
#include "harness.hpp"
#include "process.hpp"

namespace shmctx::cli {

bool is_perf_peer(std::span<const std::string_view> args) {
    return bench::is_peer_invocation(args);
}

int run_perf_peer(std::span<const std::string_view> args) { return bench::peer_main(args); }

int run_perf(std::span<const std::string_view> args) {
    bench::Options options;
    try {
        options = bench::parse_options(args, bench::Program::perf);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    // SIGINT/SIGTERM/SIGHUP end the run after the current measurement, so that every shared
    // object it created is removed (the harness's way; peers get default dispositions back).
    if (!options.help && !options.list)
        options.stop = &bench::stop_on_signals("shmctx perf", "run");
    bench::run_and_report(options, bench::Program::perf, std::cout, std::cerr);
    return kExitOk;
}

}  // namespace shmctx::cli
