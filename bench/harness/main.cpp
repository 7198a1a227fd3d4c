// shmctx_perf_harness: the benchmark harness (DESIGN.md §8). A thin main over the
// shmctx_bench_harness library, which `shmctx perf` will reuse.
//
// SIGINT/SIGTERM/SIGHUP are taken by a thread (sigwait) that asks the harness to stop after
// the current run, so that it removes its shared objects before exiting. Peers get the
// default dispositions back (Peer::spawn resets the mask).
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string_view>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "process.hpp"

int main(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    if (shmctx::bench::is_peer_invocation(args)) return shmctx::bench::peer_main(args);

    const std::atomic<bool>& stop = shmctx::bench::stop_on_signals("shmctx_perf_harness", "run");

    try {
        shmctx::bench::Options options = shmctx::bench::parse_options(args);
        if (options.help) {
            std::cout << shmctx::bench::usage();
            return 0;
        }
        if (options.list) {
            for (const auto& t : shmctx::bench::transports())
                std::cout << t.name << "\t" << t.description << "\n";
            return 0;
        }
        options.stop = &stop;
        const shmctx::bench::Report report = shmctx::bench::run(options, std::cerr);
        shmctx::bench::print_table(report, std::cout);
        if (!options.json_path.empty()) {
            shmctx::bench::write_json(report, options.json_path);
            std::cout << "\nwrote " << options.json_path << "\n";
        }
        return 0;
    } catch (const std::invalid_argument& e) {
        std::cerr << "shmctx_perf_harness: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "shmctx_perf_harness: FAILED: " << e.what() << "\n";
        return 1;
    }
}
