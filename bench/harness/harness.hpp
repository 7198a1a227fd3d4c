// The shmctx benchmark harness: cross-process throughput, round trip, fixed-rate latency with
// coordinated-omission correction and idle CPU of several transports, interleaved, with
// placement and noise indicators; and, through the actor runtime, spill/overrun behaviour under
// a slow consumer and cancel latency (DESIGN.md §8; method in bench/README.md). The engine of
// `shmctx perf` (tools/shmctx/perf.cpp); shmctx_perf_harness is a thin main.
//
// Every measurement runs across two processes: the harness posix_spawns /proc/self/exe in a
// peer role (peer_main; a program that calls run() must hand `--role ...` command lines to
// peer_main). Runs are interleaved (for each batch = test x mode x size (or rate): run 1 of every
// transport, then run 2 of every transport, ...), and each batch records the cache-line round
// trip between the two pinned processes and single-thread memcpy bandwidth.
//
// Thread-safety: run() is single thread (it pins the calling thread while it measures the
// transports and restores its affinity before the actor tests); the rest are pure.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
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
    fixed_rate,  ///< ping-pong at a fixed send rate, latency from each message's intended send
                 ///< time (coordinated-omission corrected)
    spill,       ///< actor stream to a slow consumer: StreamOverrun under the default policy,
                 ///< then spill and drain with allow_overruns (spill depth over time)
    cancel,      ///< ctx.cancel() of a parked child, also with both data rings full
};
std::string_view to_string(Test t) noexcept;

/// The spill test (Test::spill, bench/harness/spill.hpp): a producer at `producer_rate` for
/// `duration`, a consumer reading at `consumer_rate` until it has read what it could in that
/// time, then at full speed (the backlog drains).
struct SpillOptions {
    double producer_rate = 200'000;  ///< msg/s
    double consumer_rate = 0;        ///< msg/s of the slow consumer; 0: producer_rate / 2
    std::chrono::milliseconds duration{2000};
    std::size_t msg_bytes = 64;
    std::chrono::milliseconds sample_every{5};  ///< spill depth sampling period
    /// After the spill: the drainer thread's CPU over an idle window of this length (0: skip).
    std::chrono::milliseconds drainer_idle_window{0};
    /// Data ring bytes of both actors (the sink_overrun ring is the default 64 messages).
    std::size_t ring_bytes = std::size_t{1} << 20;
    /// Consumer's message rate (msg/s) in effect.
    double slow_rate() const noexcept {
        return consumer_rate > 0 ? consumer_rate : producer_rate / 2;
    }
};

/// The cancel test (Test::cancel, bench/harness/cancel.hpp).
struct CancelOptions {
    std::size_t iterations = 2000;              ///< cancels of each kind (park, park_full)
    std::size_t warmup = 200;                   ///< untimed, of each kind, first
    std::chrono::microseconds cancel_after{0};  ///< idle in the parked state before cancel()
    std::chrono::seconds stall{30};             ///< park_full: rings not full after this fails
    /// Pinning like the ring tests (every thread of each process on one CPU), so the ratios to
    /// the ring's round trip compare like with like; -1: left to the scheduler. Set by run().
    int client_cpu = -1;
    int server_cpu = -1;
};

struct Options {
    std::vector<std::size_t> sizes{8, 64, 1024, 16384, 65536};  ///< throughput message sizes
    std::vector<std::size_t> rtt_sizes{64};                     ///< round-trip message sizes
    std::vector<std::string> transports;  ///< empty: every non-peer one (see transports())
    bool peers = false;                   ///< with an empty `transports`: the peers too
    std::vector<Mode> modes{Mode::spin, Mode::block};
    /// The program's defaults are set by parse_options (shmctx_perf_harness: throughput,
    /// roundtrip, fixed-rate, idle; `shmctx perf`: all but idle).
    std::vector<Test> tests{Test::throughput, Test::roundtrip, Test::idle};
    std::chrono::milliseconds duration{200};  ///< per run
    /// Fixed-rate test: send rates (msg/s), one batch per mode and rate.
    std::vector<double> rates{10'000, 100'000, 1'000'000};
    std::chrono::milliseconds fixed_rate_duration{1000};  ///< scheduled sends per run: rate x this
    /// Interleaved fixed-rate runs per transport and batch; 0: `runs`.
    int fixed_rate_runs = 0;
    std::size_t fixed_rate_size = 64;
    SpillOptions spill;
    CancelOptions cancel;
    int runs = 5;  ///< per transport and batch, interleaved
    std::chrono::milliseconds idle_window{1000};
    std::size_t ring_bytes = 1 << 20;  ///< capacity of one direction of every transport
    std::uint32_t batch = 64;          ///< batch of the batched variants
    std::size_t c2c_round_trips = 20000;
    std::vector<int> cpus;  ///< {parent, peer}; empty: the first two allowed CPUs
    std::string json_path;
    std::string svg_path;  ///< `shmctx perf --svg`: the latency curve and the spill depth chart
    std::string md_path;   ///< the report as GitHub Markdown (write_markdown)
    /// Writes `<dir>/<stem>.{txt,md,json,svg}` with stem = result_stem(report) (bench/results/).
    std::string save_dir;
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

    /// Fixed-rate runs per transport and batch in effect.
    int fixed_rate_run_count() const noexcept {
        return fixed_rate_runs > 0 ? fixed_rate_runs : runs;
    }
};

/// Which program's defaults the command line starts from: shmctx_perf_harness (transport
/// tests: throughput, roundtrip, idle) or `shmctx perf` (throughput, roundtrip, fixed-rate,
/// spill, cancel; a shorter --quick).
enum class Program : std::uint8_t { harness, perf };

/// Parses the command line (without argv[0]). Throws std::invalid_argument with a message.
Options parse_options(std::span<const std::string_view> args, Program program = Program::harness);
std::string usage(Program program = Program::harness);

struct TransportInfo {
    std::string_view name;
    std::string_view description;
    /// Another IPC library or a kernel primitive measured for comparison (issue #11): run only
    /// when named in --transports or with --peers.
    bool peer = false;
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
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, p9999 = 0, max = 0;  ///< nanoseconds
    std::size_t samples = 0;
};

/// One point of a latency percentile curve: `percentile` in [0, 1) (0.999 = p99.9).
struct CurvePoint {
    double percentile = 0;
    double ns = 0;
};

/// One fixed-rate run: latencies measured from each message's intended send time (start +
/// i / rate; `corrected`) and, for comparison, from its actual send time (`uncorrected`).
struct FixedRateRun {
    RoundTripRun corrected;
    RoundTripRun uncorrected;
    std::size_t late = 0;  ///< messages sent after their intended time (by more than 1 us)
    /// Messages not sent because the run reached its time limit (fixed_rate_limit): the rate
    /// was not sustained. Each is in `corrected` with the time it had waited at the limit (a
    /// lower bound), not in `uncorrected`.
    std::size_t unsent = 0;
    double achieved = 0;  ///< messages / (last receive - schedule start), msg/s
};

/// When a fixed-rate run of `duration` stops sending: 3 x duration + min(duration, 1 s). A rate
/// the transport cannot sustain would otherwise make the run last count x round trip; the
/// margin lets a sustainable run ride out a stall of several times its length.
constexpr std::chrono::milliseconds fixed_rate_limit(std::chrono::milliseconds duration) {
    return 3 * duration + std::min(duration, std::chrono::milliseconds(1000));
}

/// One transport's runs within a batch.
struct Cell {
    std::string transport;
    std::vector<double> msgs_per_s;   ///< throughput runs
    std::vector<RoundTripRun> rtt;    ///< round-trip runs
    std::vector<FixedRateRun> fixed;  ///< fixed-rate runs
    /// Fixed rate: the corrected latency curve of every run's samples pooled (percentile_curve).
    std::vector<CurvePoint> curve;
};

struct Batch {
    Test test = Test::throughput;
    Mode mode = Mode::spin;
    std::size_t size = 0;
    double rate = 0;  ///< fixed rate: msg/s
    CacheLineResult c2c;
    MemcpyResult memcpy;
    std::vector<Cell> cells;
};

struct IdleResult {
    std::string transport;
    double cpu_percent = 0;
    double window_ms = 0;
};

/// Spill depth of the producer's stream at one moment of the spill run.
struct SpillSample {
    double t_ms = 0;          ///< since the first send
    std::uint64_t depth = 0;  ///< messages in the sender's spill (RingCounters::spill_depth)
};

/// The spill test's figures (bench/harness/spill.cpp).
struct SpillResult {
    SpillOptions options;
    /// Overrun half: a default-policy (on_full = raise) send() to the same slow consumer, whose
    /// ring does not allow overruns, raised StreamOverrun after this many accepted messages.
    std::uint64_t overrun_after = 0;
    std::string overrun_what;  ///< the StreamOverrun's text
    std::uint64_t sent = 0;
    std::uint64_t spilled = 0;  ///< sends that went to the spill
    std::uint64_t drained = 0;  ///< spilled messages later written to the ring
    std::uint64_t discarded = 0;
    std::uint64_t received = 0;  ///< checked by the consumer: every sequence number, in order
    std::uint64_t lost = 0;      ///< sent - received (the run fails unless 0)
    std::uint64_t high_water = 0;
    RoundTripRun send_spilling;  ///< ns: try_send() of the sends that spilled
    RoundTripRun send_all;
    double drain_rate = 0;  ///< msg/s read once the consumer is fast (the backlog draining)
    double drainer_cpu_pct = -1;
    double idle_window_s = 0;
    long drainer_sleeps_flush = 0;   ///< the drainer's futex sleeps while close() flushed
    long sender_faults = 0;          ///< minor page faults of the sending thread while it sent
    long sender_switches = 0;        ///< involuntary context switches of the sending thread
    std::vector<SpillSample> depth;  ///< every options.sample_every, until the spill is empty
};

/// The cancel test's figures (bench/harness/cancel.cpp): ctx.cancel() timed alone.
struct CancelResult {
    CancelOptions options;
    RoundTripRun context;  ///< open_context on "echo": open, Start, Started, Return
    RoundTripRun park;     ///< child blocked in receive()
    RoundTripRun full;     ///< child blocked in send(), both data rings full
};

struct Report {
    std::string commit;
    std::string cpu;
    std::string date;  ///< UTC, ISO 8601
    std::string build_type;
    int online_cpus = 0;        ///< sysconf(_SC_NPROCESSORS_ONLN) of the measuring machine
    bool virtual_cpus = false;  ///< /proc/cpuinfo has the "hypervisor" flag (a VM's vCPUs)
    Placement placement;
    Options options;
    std::vector<Batch> batches;
    std::vector<IdleResult> idle;
    std::optional<SpillResult> spill;
    std::optional<CancelResult> cancel;
};

/// Runs every selected batch; progress lines go to `progress`. Throws on any failed check, a
/// stalled or crashed peer, or a stop request; every shared object it created is removed first.
Report run(const Options& options, std::ostream& progress);

/// What a front end (shmctx_perf_harness, `shmctx perf`) does with parsed options: prints the
/// usage text (--help) or the transports (--list) to `out`, or runs (progress lines to
/// `progress`), prints the table to `out` and writes the --json, --svg and --md files and the
/// --save set (result_stem). Throws as run(), write_json(), write_svg() and write_markdown() do.
void run_and_report(const Options& options, Program program, std::ostream& out,
                    std::ostream& progress);

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
    /// Shown for information beside a target (another variant against the same bound), not a
    /// target itself.
    bool info = false;
};
/// The targets whose transports and batches are present in the report.
std::vector<TargetCheck> check_targets(const Report& report);

/// The human report: the same tables as write_markdown, as aligned plain text.
void print_table(const Report& report, std::ostream& out);
/// The report as GitHub Markdown: a header block (commit, CPU, date, build, placement with the
/// core-to-core round trip of each section, runs x duration), one table per section, the spill
/// and cancel figures and the targets as a table.
std::string render_markdown(const Report& report);
/// Writes render_markdown(report); throws SystemError if the file cannot be written.
void write_markdown(const Report& report, const std::string& path);
/// The file name stem of a saved result set (bench/results/): `<YYYY-MM-DD>_<commit7>_<cpu>`,
/// e.g. "2026-11-30_797c220_xeon-2vcpu" (commit "-dirty" when the tree was modified).
std::string result_stem(const Report& report);
/// A short, filesystem-safe name of the machine: the CPU family word of `model` (vendor, "CPU",
/// trademarks and the clock dropped) and the online CPU count, "v" for a VM's vCPUs:
/// "Intel(R) Xeon(R) Processor", 2, true -> "xeon-2vcpu".
std::string cpu_slug(std::string_view model, int online_cpus, bool virtual_cpus);
/// Writes the report as JSON; throws SystemError if the file cannot be written.
void write_json(const Report& report, const std::string& path);
/// Writes a self-contained SVG (no script, no external resource): the fixed-rate latency
/// percentile curves (x: percentile on a log scale of 1/(1-p), y: latency, log) and the spill
/// depth over time; a chart without data says so. Throws SystemError if it cannot be written.
void write_svg(const Report& report, const std::string& path);
/// The SVG document write_svg writes.
std::string render_svg(const Report& report);

// ---- For other benchmark programs that set their figures beside the harness's (e.g.
// bench/context_rtt.cpp), so that both sides are summarised and printed the same way. ----

/// Percentiles of round-trip samples (nanoseconds) exactly as the harness computes its own:
/// the first 1000 samples are dropped as warm-up when there are more than 2000, then nearest
/// rank. Sorts `samples`.
RoundTripRun round_trip_percentiles(std::vector<std::uint32_t>& samples);
/// `d` in nanoseconds, clamped to [0, 2^32 - 1] (the harness keeps latency samples as u32).
std::uint32_t saturated_ns(std::chrono::nanoseconds d) noexcept;
/// Nearest-rank percentiles of all `samples` (no warm-up dropped). Sorts `samples`.
RoundTripRun percentiles_of(std::vector<std::uint32_t>& samples);
/// Points of the latency percentile curve of sorted `samples`: p = 1 - 10^-k for k = 0, 0.05,
/// 0.1, ... while 1/(1-p) <= the sample count, then the maximum (at p = 1 - 1/n).
std::vector<CurvePoint> percentile_curve(std::span<const std::uint32_t> sorted);

/// Coordinated-omission correction (Gil Tene): a fixed-rate sender that stalls, or waits for a
/// slow reply, sends later than scheduled, and a latency measured from the actual send hides
/// the wait of every message that should have gone out meanwhile. Each message's latency is
/// measured from its intended send time instead: start + i * period.
/// Thread-safety: one thread.
class FixedRateRecorder {
public:
    /// `period_ns` = 1e9 / rate; `expected` messages (reserved).
    FixedRateRecorder(double period_ns, std::size_t expected);
    /// Message i (the i-th call): sent at `sent_ns`, its reply received at `received_ns`, both
    /// relative to the schedule's start.
    void record(std::int64_t sent_ns, std::int64_t received_ns);
    /// The next message was never sent: the run stopped at `stop_ns` (relative to the start).
    void record_unsent(std::int64_t stop_ns);
    /// Percentiles of both series; sorts the samples (corrected_samples() are sorted after).
    FixedRateRun finish();
    const std::vector<std::uint32_t>& corrected_samples() const noexcept { return corrected_; }
    /// Intended send time of message i, relative to the start.
    std::int64_t intended_ns(std::size_t i) const noexcept;

private:
    double period_ns_;
    std::vector<std::uint32_t> corrected_;
    std::vector<std::uint32_t> uncorrected_;
    std::size_t late_ = 0;
    std::size_t unsent_ = 0;
    std::int64_t last_received_ns_ = 0;
};

/// Nanoseconds as the harness prints them: "210ns", "19.2us", "1.20ms".
std::string format_ns(double ns);
/// A message rate as the harness prints it: "10k/s", "1M/s", "250/s".
std::string format_rate(double per_s);
/// `s` escaped for use inside a JSON string (without the quotes).
std::string json_escaped(std::string_view s);
/// Writes `text` to `path` (replacing it); throws SystemError if it cannot.
void write_file(const std::string& path, std::string_view text);

}  // namespace shmctx::bench
