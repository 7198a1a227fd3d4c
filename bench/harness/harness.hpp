// The shmctx benchmark harness: cross-process throughput, round trip and idle CPU of several
// transports, interleaved, with placement and noise indicators (DESIGN.md §8; method in
// bench/README.md). The engine of `shmctx perf`; shmctx_perf_harness is a thin main.
//
// Every measurement runs across two processes: the harness posix_spawns /proc/self/exe in a
// peer role (peer_main). Runs are interleaved (for each batch = test x mode x size: run 1 of
// every transport, then run 2 of every transport, ...), and each batch records the cache-line
// round trip between the two pinned processes and single-thread memcpy bandwidth.
//
// Thread-safety: run() is single thread (it pins the calling process); the rest are pure.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "indicators.hpp"
#include "transport.hpp"

namespace shmctx::bench {

enum class Test : std::uint8_t {
    throughput,  ///< one-way: parent produces, peer consumes and checks
    roundtrip,   ///< ping-pong: parent sends, peer checks and echoes, parent checks and times
    idle,        ///< CPU used by a peer blocked in receive (block mode) over an idle window
};
std::string_view to_string(Test t) noexcept;

struct Options {
    std::vector<std::size_t> sizes{8, 64, 1024, 16384, 65536};  ///< throughput message sizes
    std::vector<std::size_t> rtt_sizes{64};                     ///< round-trip message sizes
    std::vector<std::string> transports;                        ///< empty: all (see transports())
    std::vector<Mode> modes{Mode::spin, Mode::block};
    std::vector<Test> tests{Test::throughput, Test::roundtrip, Test::idle};
    std::chrono::milliseconds duration{200};  ///< per run
    int runs = 5;                             ///< per transport and batch, interleaved
    std::chrono::milliseconds idle_window{1000};
    std::size_t ring_bytes = 1 << 20;  ///< capacity of one direction of every transport
    std::uint32_t batch = 64;          ///< batch of the batched variants
    std::size_t c2c_round_trips = 20000;
    std::vector<int> cpus;  ///< {parent, peer}; empty: the first two allowed CPUs
    std::string json_path;
    /// Namespace of the harness's shared objects; empty: "bench-<pid>" (and objects of dead
    /// earlier harness processes are removed at start).
    std::string ns;
    /// Self-test of the checks: the throughput producer stamps message N with N+1 (a lost
    /// message), which must fail the run. ~0: off.
    std::uint64_t inject_skip = ~std::uint64_t{0};
    bool quick = false;
    bool list = false;
    bool help = false;
    /// Checked between runs: set by the program's signal handling to stop early (cleanly).
    const std::atomic<bool>* stop = nullptr;
};

/// Parses the command line (without argv[0]). Throws std::invalid_argument with a message.
Options parse_options(std::span<const std::string_view> args);
std::string usage();

struct TransportInfo {
    std::string_view name;
    std::string_view description;
};
/// Every transport the harness knows, in default order.
std::span<const TransportInfo> transports();

struct Stat {
    double median = 0;
    double min = 0;
    double max = 0;
};
Stat summarize(std::vector<double> values);

struct RoundTripRun {
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;  ///< nanoseconds
    std::size_t samples = 0;
};

/// One transport's runs within a batch.
struct Cell {
    std::string transport;
    std::vector<double> msgs_per_s;  ///< throughput runs
    std::vector<RoundTripRun> rtt;   ///< round-trip runs
};

struct Batch {
    Test test = Test::throughput;
    Mode mode = Mode::spin;
    std::size_t size = 0;
    CacheLineResult c2c;
    MemcpyResult memcpy;
    std::vector<Cell> cells;
};

struct IdleResult {
    std::string transport;
    double cpu_percent = 0;
    double window_ms = 0;
};

struct Report {
    std::string commit;
    std::string cpu;
    std::string date;  ///< UTC, ISO 8601
    std::string build_type;
    Placement placement;
    Options options;
    std::vector<Batch> batches;
    std::vector<IdleResult> idle;
};

/// Runs every selected batch; progress lines go to `progress`. Throws on any failed check, a
/// stalled or crashed peer, or a stop request; every shared object it created is removed first.
Report run(const Options& options, std::ostream& progress);

/// True when the command line asks for a peer role (`--role ...`).
bool is_peer_invocation(std::span<const std::string_view> args);
/// The peer side; returns the exit status (0 ok, 3 failed check or error, message on stderr).
int peer_main(std::span<const std::string_view> args);

/// One DESIGN.md §8 target evaluated on a report (ratio of medians of the same batch).
struct TargetCheck {
    std::string what;      ///< "throughput 64 B spin: shmctx-drain / minimal-batch"
    double value = 0;      ///< the measured ratio (or percentage for idle CPU)
    double target = 0;     ///< the bound
    bool at_least = true;  ///< value >= target (else value <= target, or < for idle CPU)
    bool met = false;
};
/// The targets whose transports and batches are present in the report.
std::vector<TargetCheck> check_targets(const Report& report);

void print_table(const Report& report, std::ostream& out);
/// Writes the report as JSON; throws SystemError if the file cannot be written.
void write_json(const Report& report, const std::string& path);

// ---- For other benchmark programs that set their figures beside the harness's (e.g.
// bench/context_rtt.cpp), so that both sides are summarised and printed the same way. ----

/// Percentiles of round-trip samples (nanoseconds) exactly as the harness computes its own:
/// the first 1000 samples are dropped as warm-up when there are more than 2000, then nearest
/// rank. Sorts `samples`.
RoundTripRun round_trip_percentiles(std::vector<std::uint32_t>& samples);
/// Nanoseconds as the harness prints them: "210ns", "19.2us", "1.20ms".
std::string format_ns(double ns);
/// `s` escaped for use inside a JSON string (without the quotes).
std::string json_escaped(std::string_view s);

}  // namespace shmctx::bench
