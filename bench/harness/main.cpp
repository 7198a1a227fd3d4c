// shmctx_perf_harness: the benchmark harness (DESIGN.md §8). A thin main over the
// shmctx_bench_harness library, which `shmctx perf` (tools/shmctx/perf.cpp) also fronts.
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
        options.stop = &stop;
        shmctx::bench::run_and_report(options, shmctx::bench::Program::harness, std::cout,
                                      std::cerr);
        return 0;
    } catch (const std::invalid_argument& e) {
        std::cerr << "shmctx_perf_harness: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "shmctx_perf_harness: FAILED: " << e.what() << "\n";
        return 1;
    }
}
