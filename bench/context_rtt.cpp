// shmctx_bench_context: the context round trip and the cancel latency across two processes
// against the harness's ring round trip, measured in one run (issue #4 bar, DESIGN.md §8:
// "context round trip (open, started, return) <= 6x the blocking-mode round trip"; issue #6 bar:
// "cancel latency, from ctx.cancel() to its return with the ctxc recorded, p50 <= 4x the
// blocking-mode ring round trip, also with full data rings"). Method and figures: bench/README.md
// §5 and §7.
//
//   shmctx_bench_context [--rounds 5] [--iterations 20000] [--json FILE] [--quick] [--help]
//
// Processes. The program posix_spawns copies of itself (bench::Peer, as the harness does):
//  - one `--context-server` process for the whole run: an shmctx::Actor exposing "echo", which
//    calls ctx.started(args) and returns args + 1, "echo_plain", which only returns args + 1,
//    "park", which calls started(args), opens its stream and blocks in receive() (nothing is
//    ever sent to it), and "park_full", which calls started(args), opens its stream with
//    on_full = block, try_sends until the parent's inbound ring is full and then blocks in one
//    more send();
//  - the harness's own peers (`--role echo|cacheline`), spawned by bench::run() for every ring
//    measurement, each with fresh shared objects.
// The parent holds the client Actor and one Portal to the server.
//
// Rounds, interleaved A B A B ... (bench/README.md §1.2):
//  A  bench::run(): the harness's ring round trip of one transport (default "shmctx", 64 B), in
//     spin mode and then in block mode, each a fresh peer process, with the core-to-core
//     cache-line round trip recorded before each;
//  B  `iterations` × portal.open_context("echo", i, body) (open, Start, started(), body returns,
//     Return, close), then `iterations` × portal.run("echo", i) and × portal.run("echo_plain",
//     i), each call timed alone with two steady_clock reads; then `iterations` cancels of each
//     of "park" and "park_full": open_context, and in the body (for park_full after the parent
//     filled the child's inbound ring with try_send and saw its own inbound ring full and the
//     child blocked in send(), through the ring's full_events counter) ctx.cancel() timed alone;
//     the body then checks cancel_acked() and returns, and open_context must return the
//     absorbed cancel (Outcome::is_absorbed_cancel()). Every started value and result is
//     checked (a wrong one aborts). Around each kind, getrusage of both processes (the server
//     answers over its stdin, outside the timed interval) gives context switches and CPU time
//     per call.
// Context samples are summarised by the harness's own function (first 1000 of a round dropped
// as warm-up when there are more than 2000, nearest rank), after an untimed warm-up before
// round 1. Ratios are of medians over rounds (the harness's rule), with the per-round ratios'
// min–max beside them. Speed is reported, never asserted: the exit status is 0 whenever every
// check passed, whatever the ratios.
//
// Placement (--placement): `pinned` (default) puts every thread of this process on the harness's
// parent CPU and every thread of the server on its peer CPU, so that the two processes sit where
// the ring's two processes sit; `free` leaves the actor threads of both processes to the
// scheduler (the ring measurement stays pinned, as the harness always does).
//
// A watchdog thread guards the context phases: if no round trip completes for --stall-s seconds
// it kills the server, so that the runtime's death detection ends the stuck call with PeerDied
// and the run cleans up; if even that does not happen within 10 s it exits with status 1.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "cancel.hpp"
#include "harness.hpp"
#include "process.hpp"
#include "shmctx/actor.hpp"
#include "shmctx/context.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/names.hpp"

namespace shmctx::bench {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kServerFlag = "--context-server";
/// Returns args + 1 without started(): the plain one-shot RPC.
constexpr std::string_view kPlainEndpoint = "echo_plain";
/// Bar of issue #4: open_context p50 <= this × the ring's block-mode p50.
constexpr double kBar = 6.0;
/// Bar of issue #6: cancel p50 <= this × the ring's block-mode p50 (both cancel kinds).
constexpr double kCancelBar = 4.0;

struct Config {
    int rounds = 5;
    std::size_t iterations = 20000;  ///< per round, of each kind
    std::size_t warmup = 2000;       ///< untimed, of each, before round 1
    std::chrono::milliseconds ring_duration{200};
    std::string ring_transport = "shmctx";
    std::size_t ring_size = 64;
    std::size_t c2c_round_trips = 20000;
    std::vector<int> cpus;
    bool pin_actors = true;
    /// ActorOptions::spin_before_sleep of both actors, in microseconds; -1: the library default.
    long spin_us = -1;
    /// The cancel kinds: idle time between the parked state and ctx.cancel() (0: cancel at once,
    /// while the child's threads may still be in their spin phase).
    std::chrono::microseconds cancel_after{0};
    std::chrono::seconds stall{30};
    std::string ns;
    std::string json_path;
    bool quick = false;
    bool help = false;
};

std::string context_usage() {
    return "usage: shmctx_bench_context [options]\n"
           "  --rounds N          interleaved rounds, each: ring (spin, block) then contexts "
           "and cancels (default 5)\n"
           "  --iterations N      context round trips and cancels per round, of each kind "
           "(default 20000)\n"
           "  --warmup N          untimed round trips of each kind before round 1 (default 2000)\n"
           "  --ring-ms MS        duration of each ring round-trip run (default 200)\n"
           "  --ring-transport T  harness transport of the ring figure (default shmctx)\n"
           "  --ring-size B       ring message size in bytes (default 64)\n"
           "  --cpus A,B          CPUs of this process and of the peers (default: first two "
           "allowed)\n"
           "  --placement P       pinned: every thread of both processes pinned like the ring's "
           "processes (default); free: actor threads left to the scheduler\n"
           "  --spin-us US        ActorOptions::spin_before_sleep of both actors (default: the "
           "library's)\n"
           "  --cancel-after-us US  the cancel kinds: wait US (untimed) in the parked state "
           "before cancel(), so that the child's threads have gone to sleep (default 0)\n"
           "  --stall-s S         a context phase without progress for S s fails (default 30)\n"
           "  --ns NS             namespace of all shared objects (default bench-ctx-<pid>)\n"
           "  --json FILE         also write the results as JSON\n"
           "  --quick             CI smoke run: 2 rounds of 300 round trips, ring 30 ms\n"
           "  --help              this text\n";
}

long parse_number(std::string_view key, std::string_view v, long min) {
    long x = 0;
    const auto [end, err] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (err != std::errc() || end != v.data() + v.size() || x < min)
        throw std::invalid_argument(std::string(key) + ": expected an integer >= " +
                                    std::to_string(min) + ", got \"" + std::string(v) + "\"");
    return x;
}

Config parse_config(std::span<const std::string_view> args) {
    Config c;
    // --quick sets defaults first so that explicit options given with it still win.
    for (auto a : args) {
        if (a == "--quick") {
            c.quick = true;
            c.rounds = 2;
            c.iterations = 300;
            c.warmup = 100;
            c.ring_duration = 30ms;
            c.c2c_round_trips = 5000;
        }
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string_view k = args[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= args.size()) throw std::invalid_argument(std::string(k) + ": no value");
            return args[++i];
        };
        if (k == "--quick") continue;
        if (k == "--help" || k == "-h") {
            c.help = true;
        } else if (k == "--rounds") {
            c.rounds = static_cast<int>(parse_number(k, value(), 1));
        } else if (k == "--iterations") {
            c.iterations = static_cast<std::size_t>(parse_number(k, value(), 1));
        } else if (k == "--warmup") {
            c.warmup = static_cast<std::size_t>(parse_number(k, value(), 0));
        } else if (k == "--ring-ms") {
            c.ring_duration = std::chrono::milliseconds(parse_number(k, value(), 1));
        } else if (k == "--ring-transport") {
            c.ring_transport = value();
            const auto known = transports();
            if (std::none_of(known.begin(), known.end(),
                             [&](const TransportInfo& t) { return t.name == c.ring_transport; }))
                throw std::invalid_argument("--ring-transport: unknown transport \"" +
                                            c.ring_transport +
                                            "\" (shmctx_perf_harness --list names them)");
        } else if (k == "--ring-size") {
            c.ring_size = static_cast<std::size_t>(parse_number(k, value(), 16));
        } else if (k == "--cpus") {
            const std::string_view v = value();
            const auto comma = v.find(',');
            if (comma == std::string_view::npos)
                throw std::invalid_argument("--cpus: expected A,B");
            c.cpus = {static_cast<int>(parse_number(k, v.substr(0, comma), 0)),
                      static_cast<int>(parse_number(k, v.substr(comma + 1), 0))};
        } else if (k == "--placement") {
            const std::string_view v = value();
            if (v != "pinned" && v != "free")
                throw std::invalid_argument("--placement: pinned or free");
            c.pin_actors = v == "pinned";
        } else if (k == "--stall-s") {
            c.stall = std::chrono::seconds(parse_number(k, value(), 1));
        } else if (k == "--spin-us") {
            c.spin_us = parse_number(k, value(), 0);
        } else if (k == "--cancel-after-us") {
            c.cancel_after = std::chrono::microseconds(parse_number(k, value(), 0));
        } else if (k == "--ns") {
            c.ns = value();
        } else if (k == "--json") {
            c.json_path = value();
        } else {
            throw std::invalid_argument("unknown option " + std::string(k) + " (see --help)");
        }
    }
    return c;
}

// ---- the server process ----

/// What a process spent, from getrusage(RUSAGE_SELF): all its threads, also those that ended.
struct Usage {
    double sleeps = 0;   ///< voluntary context switches (blocking waits)
    double preempt = 0;  ///< involuntary context switches (preemption, yields that switched)
    double cpu_ns = 0;   ///< user + system CPU time

    static Usage self() {
        rusage ru{};
        ::getrusage(RUSAGE_SELF, &ru);
        auto ns = [](const timeval& tv) {
            return static_cast<double>(tv.tv_sec) * 1e9 + static_cast<double>(tv.tv_usec) * 1e3;
        };
        return {static_cast<double>(ru.ru_nvcsw), static_cast<double>(ru.ru_nivcsw),
                ns(ru.ru_utime) + ns(ru.ru_stime)};
    }
    std::string to_line() const {
        std::ostringstream o;
        o << std::fixed << std::setprecision(0) << "usage " << sleeps << " " << preempt << " "
          << cpu_ns;
        return o.str();
    }
    static Usage from_line(const std::string& line) {
        std::istringstream in(line);
        std::string head;
        Usage u;
        if (!(in >> head >> u.sleeps >> u.preempt >> u.cpu_ns) || head != "usage")
            throw std::runtime_error("server: expected \"usage ...\", got \"" + line + "\"");
        return u;
    }
    /// (later - earlier) / n
    static Usage per_call(const Usage& earlier, const Usage& later, std::size_t n) {
        const auto k = static_cast<double>(n);
        return {(later.sleeps - earlier.sleeps) / k, (later.preempt - earlier.preempt) / k,
                (later.cpu_ns - earlier.cpu_ns) / k};
    }
};

ActorOptions actor_options(const std::string& ns, long spin_us) {
    ActorOptions o;
    o.ns = ns;
    if (spin_us >= 0) o.spin_before_sleep = std::chrono::microseconds(spin_us);
    return o;
}

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

/// `--context-server --ns NS --name NAME --cpu C`: serves "echo" and "echo_plain" until the
/// parent writes "quit" or closes our stdin; answers "usage" with Usage::to_line(). Returns the
/// exit status (3 on any error, message on stderr).
int server_main(std::span<const std::string_view> args) {
    std::string ns;
    std::string name;
    int cpu = -1;
    long spin_us = -1;
    try {
        for (std::size_t i = 1; i + 1 < args.size(); i += 2) {
            const std::string_view k = args[i];
            const std::string_view v = args[i + 1];
            if (k == "--ns")
                ns = v;
            else if (k == "--name")
                name = v;
            else if (k == "--cpu")
                cpu = static_cast<int>(parse_number(k, v, -1));
            else if (k == "--spin-us")
                spin_us = parse_number(k, v, -1);
            else
                throw std::invalid_argument("unknown argument " + std::string(k));
        }
        if (ns.empty() || name.empty()) throw std::invalid_argument("--ns and --name required");
        // Die with the parent: a SIGKILLed benchmark must not leave its server behind.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() == 1)
            throw std::runtime_error("parent already gone");
        pin_to(cpu);  // before the actor exists: every thread it starts inherits the CPU
        Actor actor(name, actor_options(ns, spin_us));
        actor.expose(std::string(kPlainEndpoint),
                     [](Context&, const Payload& in) { return successor(in); });
        expose_cancel_endpoints(actor);  // "echo", "park", "park_full" (bench/harness/cancel.hpp)
        say("ready");
        char buf[64];
        while (std::fgets(buf, sizeof buf, stdin) != nullptr) {
            const std::string_view line(buf);
            if (line == "quit\n") break;
            if (line == "usage\n") say(Usage::self().to_line());
        }
        return 0;  // ~Actor: orderly shutdown, our shared objects removed
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx_bench_context server (%s): FAILED: %s\n", name.c_str(),
                     e.what());
        return 3;
    }
}

/// The server process on the parent side. The destructor asks it to quit and waits a little
/// (so that it removes its shared objects), then bench::Peer's destructor kills it if needed.
class Server {
public:
    Server(const std::string& ns, const std::string& name, int cpu, long spin_us)
        : peer_(Peer::spawn({std::string(kServerFlag), "--ns", ns, "--name", name, "--cpu",
                             std::to_string(cpu), "--spin-us", std::to_string(spin_us)})) {
        const std::string line = peer_.read_line(Deadline(10s));
        if (line != "ready")
            throw std::runtime_error("server: expected \"ready\", got \"" + line + "\"");
    }
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;
    ~Server() {
        try {
            if (!quit_sent_) peer_.write_line("quit");
            (void)peer_.wait_exit(Deadline(5s));
        } catch (const std::exception&) {
            // Already gone or not answering: ~Peer kills and reaps it.
        }
    }
    pid_t pid() const noexcept { return peer_.pid(); }
    /// The server's getrusage now (asked over its stdin; outside any timed interval).
    Usage usage() {
        peer_.write_line("usage");
        return Usage::from_line(peer_.read_line(Deadline(5s)));
    }
    std::string describe() { return peer_.describe(); }
    /// Orderly end of the run: the server must exit with status 0.
    void quit() {
        peer_.write_line("quit");
        quit_sent_ = true;
        peer_.wait_success(Deadline(10s));
    }

private:
    Peer peer_;
    bool quit_sent_ = false;
};

// ---- the watchdog ----

/// Ends a context phase that stopped making progress: kills the server after `stall` without
/// a completed round trip (the runtime must then report PeerDied), and exits the process if the
/// stuck call does not return within 10 s after that.
/// Thread-safety: arm/disarm/tick from the measuring thread only.
class Watchdog {
public:
    Watchdog(pid_t server, Duration stall) : server_(server), stall_(stall) {
        thread_ = std::thread([this] { watch(); });
    }
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    void arm(const char* phase) {
        std::lock_guard lock(mutex_);
        phase_ = phase;
        tick(Clock::now());
        armed_ = true;
    }
    void disarm() {
        std::lock_guard lock(mutex_);
        armed_ = false;
    }
    /// One round trip completed at `now`.
    void tick(Clock::time_point now) noexcept {
        // relaxed: a heartbeat compared against a threshold; it publishes no other data.
        last_ns_.store(now.time_since_epoch().count(), std::memory_order::relaxed);
    }

private:
    void watch() {
        std::unique_lock lock(mutex_);
        bool killed = false;
        while (!cv_.wait_for(lock, 200ms, [this] { return stop_; })) {
            if (!armed_) {
                killed = false;
                continue;
            }
            // relaxed: see tick().
            const Clock::time_point last{
                Clock::duration(last_ns_.load(std::memory_order::relaxed))};
            const auto idle = Clock::now() - last;
            if (!killed && idle > stall_) {
                std::fprintf(
                    stderr,
                    "shmctx_bench_context: no %s round trip completed for %lld ms; "
                    "killing the server (pid %d) so that the runtime reports PeerDied\n",
                    phase_,
                    static_cast<long long>(
                        std::chrono::duration_cast<std::chrono::milliseconds>(idle).count()),
                    static_cast<int>(server_));
                (void)::kill(server_, SIGKILL);  // reaped by the main thread (~Peer)
                killed = true;
            } else if (killed && idle > stall_ + 10s) {
                std::fprintf(stderr,
                             "shmctx_bench_context: FAILED: the stuck %s call did not return "
                             "within 10 s of the server's death; exiting without cleanup\n",
                             phase_);
                std::_Exit(1);
            }
        }
    }

    const pid_t server_;
    const Duration stall_;
    std::atomic<Clock::rep> last_ns_{0};
    std::mutex mutex_;
    std::condition_variable cv_;  // wakes the watch thread for stop_
    bool stop_ = false;           // guarded by mutex_
    bool armed_ = false;          // guarded by mutex_
    const char* phase_ = "";      // guarded by mutex_
    std::thread thread_;
};

// ---- measurements ----

/// One Portal::run round trip of `fn` with argument `tag`; checks the result. Returns its
/// latency.
Clock::duration run_once(Portal& portal, std::string_view fn, std::int64_t tag, Duration timeout) {
    const Payload args = Payload::value(tag);
    const auto t0 = Clock::now();
    const Payload result = portal.run(fn, args, Deadline(timeout));
    const auto t1 = Clock::now();
    const auto got = result.value<std::int64_t>();
    if (got != tag + 1)
        throw CheckFailed("run: result " + std::to_string(got) + ", expected " +
                          std::to_string(tag + 1));
    return t1 - t0;
}

/// The calls measured in phase B, in this order.
enum class Kind : std::uint8_t {
    open_context,  ///< open_context on "echo" (the issue #4 bar's figure)
    run,           ///< Portal::run on "echo" (whose started() value run() discards)
    run_plain,     ///< Portal::run on "echo_plain" (no started())
    cancel_park,   ///< ctx.cancel() of "park" (child blocked in receive(); issue #6 bar)
    cancel_full,   ///< ctx.cancel() of "park_full" (both data rings full; issue #6 bar)
};
constexpr Kind kKinds[] = {Kind::open_context, Kind::run, Kind::run_plain, Kind::cancel_park,
                           Kind::cancel_full};

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::open_context:
            return "open_context";
        case Kind::run:
            return "run";
        case Kind::run_plain:
            return "run_plain";
        case Kind::cancel_park:
            return "cancel_park";
        case Kind::cancel_full:
            return "cancel_full";
    }
    return "?";
}

/// `n` calls of `kind`; arguments continue from `tag`. Returns the samples (ns).
std::vector<std::uint32_t> measure(Kind kind, Portal& portal, std::size_t n, std::int64_t& tag,
                                   Watchdog& watchdog, const Config& cfg) {
    std::vector<std::uint32_t> samples;
    samples.reserve(n);
    watchdog.arm(kind_name(kind));
    const Duration stall = cfg.stall;
    for (std::size_t i = 0; i < n; ++i) {
        Clock::duration d{};
        switch (kind) {
            case Kind::open_context:
                d = context_round_trip_once(portal, tag);
                break;
            case Kind::run:
                d = run_once(portal, kEchoEndpoint, tag, stall);
                break;
            case Kind::run_plain:
                d = run_once(portal, kPlainEndpoint, tag, stall);
                break;
            case Kind::cancel_park:
            case Kind::cancel_full:
                d = cancel_once(portal, kind == Kind::cancel_full, tag, stall, cfg.cancel_after);
                break;
        }
        ++tag;
        samples.push_back(saturated_ns(d));
        watchdog.tick(Clock::now());
    }
    watchdog.disarm();
    return samples;
}

struct RingRound {
    RoundTripRun spin;
    RoundTripRun block;
    double c2c_spin_ns = 0;
    double c2c_block_ns = 0;
};

struct Meta {
    std::string commit;
    std::string cpu;
    std::string date;
    std::string build_type;
};

/// A: the harness's round trip of `cfg.ring_transport`, spin then block, one run each.
RingRound measure_ring(const Config& cfg, const Placement& placement, const std::string& ns,
                       const std::atomic<bool>* stop, std::optional<Meta>& meta) {
    Options o;
    o.tests = {Test::roundtrip};
    o.transports = {cfg.ring_transport};
    o.modes = {Mode::spin, Mode::block};
    o.rtt_sizes = {cfg.ring_size};
    o.duration = cfg.ring_duration;
    o.runs = 1;
    o.c2c_round_trips = cfg.c2c_round_trips;
    if (placement.parent_cpu >= 0) o.cpus = {placement.parent_cpu, placement.peer_cpu};
    o.ns = ns + "-ring";  // apart from the actors' objects; still under the same test- prefix
    o.stop = stop;
    std::ostringstream progress;  // the harness's per-batch lines; we print our own
    const Report rep = run(o, progress);
    RingRound r;
    for (const Batch& b : rep.batches) {
        if (b.cells.size() != 1 || b.cells[0].rtt.size() != 1)
            throw std::logic_error("harness report: expected one round-trip run per batch");
        (b.mode == Mode::spin ? r.spin : r.block) = b.cells[0].rtt[0];
        (b.mode == Mode::spin ? r.c2c_spin_ns : r.c2c_block_ns) = b.c2c.median_ns;
    }
    if (rep.batches.size() != 2) throw std::logic_error("harness report: expected two batches");
    if (!meta) meta = Meta{rep.commit, rep.cpu, rep.date, rep.build_type};
    return r;
}

/// One kind's figures of one round.
struct ContextFigures {
    RoundTripRun rtt;
    Usage parent;  ///< per round trip
    Usage server;  ///< per round trip
};

struct Round {
    RingRound ring;
    ContextFigures ctx[std::size(kKinds)];
};

// ---- report ----

using Field = double RoundTripRun::*;
struct FieldInfo {
    const char* name;
    Field field;
};
constexpr FieldInfo kFields[] = {{"p50", &RoundTripRun::p50},
                                 {"p90", &RoundTripRun::p90},
                                 {"p99", &RoundTripRun::p99},
                                 {"p999", &RoundTripRun::p999},
                                 {"max", &RoundTripRun::max}};

struct Row {
    const char* key;    ///< JSON key
    const char* label;  ///< table label
    RoundTripRun (*get)(const Round&);
};
const Row kRows[] = {
    {"ring_spin", "ring spin", [](const Round& r) { return r.ring.spin; }},
    {"ring_block", "ring block", [](const Round& r) { return r.ring.block; }},
    {"open_context", "open_context", [](const Round& r) { return r.ctx[0].rtt; }},
    {"run", "run", [](const Round& r) { return r.ctx[1].rtt; }},
    {"run_plain", "run (plain)", [](const Round& r) { return r.ctx[2].rtt; }},
    {"cancel_park", "cancel (park)", [](const Round& r) { return r.ctx[3].rtt; }},
    {"cancel_full", "cancel (full)", [](const Round& r) { return r.ctx[4].rtt; }},
};
static_assert(std::size(kKinds) == 5, "kRows and kCostRows name every kind");

/// Per-round-trip cost of one kind: both processes' getrusage.
struct CostRow {
    const char* key;
    const char* label;
    std::size_t kind;
};
constexpr CostRow kCostRows[] = {{"open_context", "open_context", 0},
                                 {"run", "run", 1},
                                 {"run_plain", "run (plain)", 2},
                                 {"cancel_park", "cancel (park)", 3},
                                 {"cancel_full", "cancel (full)", 4}};

Stat cost_over(const std::vector<Round>& rounds, std::size_t kind, bool server,
               double Usage::*field) {
    std::vector<double> v;
    for (const Round& r : rounds)
        v.push_back((server ? r.ctx[kind].server : r.ctx[kind].parent).*field);
    return summarize(std::move(v));
}

Stat stat_over(const std::vector<Round>& rounds, const Row& row, Field f) {
    std::vector<double> v;
    for (const Round& r : rounds) v.push_back(row.get(r).*f);
    return summarize(std::move(v));
}

struct Ratio {
    std::string what;
    double value = 0;  ///< ratio of the medians over rounds
    Stat per_round;    ///< of the per-round ratios
    std::optional<double> bar;
};

std::vector<Ratio> ratios(const std::vector<Round>& rounds) {
    std::vector<Ratio> out;
    auto add = [&](const Row& num, const Row& den, Field f, const char* fname,
                   std::optional<double> bar) {
        Ratio r;
        r.what = std::string(num.label) + " " + fname + " / " + den.label + " " + fname;
        const double d = stat_over(rounds, den, f).median;
        r.value = d > 0 ? stat_over(rounds, num, f).median / d : 0;
        std::vector<double> each;
        for (const Round& x : rounds) {
            const double dx = den.get(x).*f;
            each.push_back(dx > 0 ? (num.get(x).*f) / dx : 0);
        }
        r.per_round = summarize(std::move(each));
        r.bar = bar;
        out.push_back(std::move(r));
    };
    const Row& spin = kRows[0];
    const Row& block = kRows[1];
    const Row& ctx = kRows[2];
    const Row& rpc = kRows[3];
    const Row& plain = kRows[4];
    const Row& park = kRows[5];
    const Row& full = kRows[6];
    add(ctx, block, &RoundTripRun::p50, "p50", kBar);
    add(ctx, spin, &RoundTripRun::p50, "p50", std::nullopt);
    add(ctx, block, &RoundTripRun::p99, "p99", std::nullopt);
    add(rpc, block, &RoundTripRun::p50, "p50", std::nullopt);
    add(rpc, spin, &RoundTripRun::p50, "p50", std::nullopt);
    add(plain, block, &RoundTripRun::p50, "p50", std::nullopt);
    add(park, block, &RoundTripRun::p50, "p50", kCancelBar);
    add(park, spin, &RoundTripRun::p50, "p50", std::nullopt);
    add(full, block, &RoundTripRun::p50, "p50", kCancelBar);
    add(full, spin, &RoundTripRun::p50, "p50", std::nullopt);
    add(park, block, &RoundTripRun::p99, "p99", std::nullopt);
    add(full, block, &RoundTripRun::p99, "p99", std::nullopt);
    return out;
}

void print_table(const Config& cfg, const Meta& meta, const Placement& placement,
                 const std::vector<Round>& rounds, const std::string& command, std::ostream& out) {
    out << "shmctx context round trip  commit " << meta.commit.substr(0, 12) << "  " << meta.date
        << "\n"
        << "cpu: " << meta.cpu << "   placement: " << placement.text
        << (cfg.pin_actors ? " (all threads of both processes)" : " (ring only; actors free)")
        << "   build: " << meta.build_type << "\n"
        << "command: " << command << "\n"
        << "actors: spin_before_sleep "
        << (cfg.spin_us < 0 ? std::string("default") : std::to_string(cfg.spin_us) + " us") << "\n"
        << rounds.size() << " rounds interleaved (ring spin, ring block, then contexts); ring: "
        << cfg.ring_transport << " " << cfg.ring_size << " B, " << cfg.ring_duration.count()
        << " ms per mode; contexts: " << cfg.iterations
        << " of each kind per round (open_context and run on \"echo\", which calls started(); "
           "run (plain) on \"echo_plain\", which does not; cancel: ctx.cancel() alone, of "
           "\"park\" (child blocked in receive()) and \"park_full\" (both data rings full, "
           "child blocked in send())"
        << (cfg.cancel_after.count() > 0
                ? ", " + std::to_string(cfg.cancel_after.count()) + " us after the parked state"
                : std::string())
        << "), " << cfg.warmup << " of each untimed before round 1\n"
        << "medians over rounds, with the p50's (min - max) over rounds\n";
    if (meta.build_type != "Release" && meta.build_type != "RelWithDebInfo")
        out << "WARNING: not an optimised build; figures are not meaningful\n";
    char line[256];
    std::snprintf(line, sizeof line, "\n  %-14s %9s %9s %9s %9s %9s %23s\n", "round trip", "p50",
                  "p90", "p99", "p99.9", "max", "p50 (min - max)");
    out << line;
    for (const Row& row : kRows) {
        std::string cells;
        for (const FieldInfo& f : kFields) {
            char c[16];
            std::snprintf(c, sizeof c, " %9s",
                          format_ns(stat_over(rounds, row, f.field).median).c_str());
            cells += c;
        }
        const Stat p50 = stat_over(rounds, row, &RoundTripRun::p50);
        // Appended, not `"(" + std::string`: GCC 12 reports a false -Wrestrict for that at
        // -O3 (GCC bug 105329).
        std::string range = "(";
        range.append(format_ns(p50.min)).append(" - ").append(format_ns(p50.max)).append(")");
        std::snprintf(line, sizeof line, "  %-14s%s %23s\n", row.label, cells.c_str(),
                      range.c_str());
        out << line;
    }
    std::vector<double> c2c;
    for (const Round& r : rounds) {
        c2c.push_back(r.ring.c2c_spin_ns);
        c2c.push_back(r.ring.c2c_block_ns);
    }
    const Stat c = summarize(c2c);
    out << "  core-to-core cache-line round trip before each ring run: " << format_ns(c.median)
        << " (" << format_ns(c.min) << " - " << format_ns(c.max) << ")\n";

    out << "\ncost per call (medians over rounds; getrusage of each whole process; for the "
           "cancels the whole open_context with the cancel inside)\n";
    std::snprintf(line, sizeof line, "  %-14s %13s %8s %9s %13s %8s %9s\n", "call", "parent sleeps",
                  "preempt", "cpu", "server sleeps", "preempt", "cpu");
    out << line;
    for (const CostRow& row : kCostRows) {
        auto med = [&](bool server, double Usage::*f) {
            return cost_over(rounds, row.kind, server, f).median;
        };
        std::snprintf(line, sizeof line, "  %-14s %13.2f %8.2f %9s %13.2f %8.2f %9s\n", row.label,
                      med(false, &Usage::sleeps), med(false, &Usage::preempt),
                      format_ns(med(false, &Usage::cpu_ns)).c_str(), med(true, &Usage::sleeps),
                      med(true, &Usage::preempt), format_ns(med(true, &Usage::cpu_ns)).c_str());
        out << line;
    }

    out << "\nratios (of medians over rounds; per-round min - max)\n";
    for (const Ratio& r : ratios(rounds)) {
        std::string bar = "info";
        if (r.bar) {
            char b[48];
            std::snprintf(b, sizeof b, "<= %g  %s", *r.bar, r.value <= *r.bar ? "met" : "MISSED");
            bar = b;
        }
        std::snprintf(line, sizeof line, "  %-42s %8.2f  (%.2f - %.2f)  %s\n", r.what.c_str(),
                      r.value, r.per_round.min, r.per_round.max, bar.c_str());
        out << line;
    }
}

std::string num(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

std::string stat_json(const Stat& s) {
    return "{\"median\": " + num(s.median) + ", \"min\": " + num(s.min) +
           ", \"max\": " + num(s.max) + "}";
}

void write_json(const Config& cfg, const Meta& meta, const Placement& placement,
                const std::vector<Round>& rounds, const std::string& command,
                const std::string& path) {
    std::ostringstream j;
    j << "{\n  \"tool\": \"shmctx_bench_context\",\n"
      << "  \"commit\": \"" << json_escaped(meta.commit) << "\",\n"
      << "  \"cpu\": \"" << json_escaped(meta.cpu) << "\",\n"
      << "  \"date\": \"" << json_escaped(meta.date) << "\",\n"
      << "  \"build_type\": \"" << json_escaped(meta.build_type) << "\",\n"
      << "  \"command\": \"" << json_escaped(command) << "\",\n"
      << "  \"placement\": {\"parent_cpu\": " << placement.parent_cpu
      << ", \"peer_cpu\": " << placement.peer_cpu << ", \"actor_threads\": \""
      << (cfg.pin_actors ? "pinned" : "free") << "\", \"text\": \"" << json_escaped(placement.text)
      << "\"},\n"
      << "  \"parameters\": {\"rounds\": " << cfg.rounds << ", \"iterations\": " << cfg.iterations
      << ", \"warmup\": " << cfg.warmup << ", \"ring_ms\": " << cfg.ring_duration.count()
      << ", \"ring_transport\": \"" << json_escaped(cfg.ring_transport)
      << "\", \"ring_size\": " << cfg.ring_size << ", \"c2c_round_trips\": " << cfg.c2c_round_trips
      << ", \"spin_before_sleep_us\": " << cfg.spin_us
      << ", \"cancel_after_us\": " << cfg.cancel_after.count()
      << ", \"quick\": " << (cfg.quick ? "true" : "false") << "},\n"
      << "  \"results\": {";
    for (std::size_t ri = 0; ri < std::size(kRows); ++ri) {
        const Row& row = kRows[ri];
        j << (ri ? ",\n" : "\n") << "    \"" << row.key << "\": {";
        for (const FieldInfo& f : kFields)
            j << "\"" << f.name << "_ns\": " << stat_json(stat_over(rounds, row, f.field)) << ", ";
        j << "\"samples_per_round\": [";
        for (std::size_t i = 0; i < rounds.size(); ++i)
            j << (i ? ", " : "") << row.get(rounds[i]).samples;
        j << "], \"p50_ns_per_round\": [";
        for (std::size_t i = 0; i < rounds.size(); ++i)
            j << (i ? ", " : "") << num(row.get(rounds[i]).p50);
        j << "]}";
    }
    j << "\n  },\n  \"cost_per_round_trip\": {";
    for (std::size_t ri = 0; ri < std::size(kCostRows); ++ri) {
        const CostRow& row = kCostRows[ri];
        j << (ri ? ",\n" : "\n") << "    \"" << row.key << "\": {";
        for (const bool server : {false, true}) {
            j << (server ? ", " : "") << "\"" << (server ? "server" : "parent") << "\": {"
              << "\"sleeps\": " << stat_json(cost_over(rounds, row.kind, server, &Usage::sleeps))
              << ", \"preempt\": "
              << stat_json(cost_over(rounds, row.kind, server, &Usage::preempt))
              << ", \"cpu_ns\": " << stat_json(cost_over(rounds, row.kind, server, &Usage::cpu_ns))
              << "}";
        }
        j << "}";
    }
    j << "\n  },\n  \"c2c_rtt_ns_per_round\": [";
    for (std::size_t i = 0; i < rounds.size(); ++i)
        j << (i ? ", " : "") << "{\"spin\": " << num(rounds[i].ring.c2c_spin_ns)
          << ", \"block\": " << num(rounds[i].ring.c2c_block_ns) << "}";
    j << "],\n  \"ratios\": [";
    const auto rs = ratios(rounds);
    for (std::size_t i = 0; i < rs.size(); ++i) {
        const Ratio& r = rs[i];
        j << (i ? ",\n    " : "\n    ") << "{\"what\": \"" << json_escaped(r.what)
          << "\", \"value\": " << num(r.value) << ", \"per_round\": " << stat_json(r.per_round);
        if (r.bar) {
            j << ", \"bar\": " << num(*r.bar)
              << ", \"met\": " << (r.value <= *r.bar ? "true" : "false");
        }
        j << "}";
    }
    j << "\n  ]\n}\n";
    std::ofstream f(path, std::ios::trunc);
    f << j.str();
    f.close();
    if (!f) throw std::runtime_error("cannot write " + path);
}

// ---- the parent ----

cpu_set_t current_affinity() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0)
        throw SystemError("sched_getaffinity failed");
    return set;
}

void restore_affinity(const cpu_set_t& set) {
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
        throw SystemError("sched_setaffinity failed");
}

int parent_main(const Config& cfg, const std::string& command, const std::atomic<bool>& stop) {
    const std::string ns = cfg.ns.empty() ? "bench-ctx-" + std::to_string(::getpid()) : cfg.ns;
    const std::string pid = std::to_string(::getpid());
    const std::string server_name = "ctxbench-server-" + pid;
    const std::string client_name = "ctxbench-client-" + pid;

    // Pins this thread to the parent CPU (the harness does the same in every run()). Pinned
    // placement: the actor created below inherits it for all its threads. Free: undone here
    // and after every ring measurement, so that actor threads are never pinned.
    const cpu_set_t all = current_affinity();
    const Placement placement = choose_placement(cfg.cpus);
    if (!cfg.pin_actors) restore_affinity(all);
    auto check_stop = [&] {
        // relaxed: a flag polled between phases; it guards no data.
        if (stop.load(std::memory_order::relaxed)) throw std::runtime_error("interrupted");
    };

    Server server(ns, server_name, cfg.pin_actors ? placement.peer_cpu : -1, cfg.spin_us);
    std::vector<Round> rounds;
    std::optional<Meta> meta;
    try {
        Actor client(client_name, actor_options(ns, cfg.spin_us));
        Portal portal = client.connect(server_name, Deadline(10s));
        Watchdog watchdog(server.pid(), cfg.stall);
        std::int64_t tag = 0;
        for (const Kind k : kKinds) (void)measure(k, portal, cfg.warmup, tag, watchdog, cfg);
        for (int r = 0; r < cfg.rounds; ++r) {
            check_stop();
            Round round;
            round.ring = measure_ring(cfg, placement, ns, &stop, meta);
            if (!cfg.pin_actors) restore_affinity(all);
            check_stop();
            for (std::size_t k = 0; k < std::size(kKinds); ++k) {
                ContextFigures& f = round.ctx[k];
                const Usage parent0 = Usage::self();
                const Usage server0 = server.usage();
                auto s = measure(kKinds[k], portal, cfg.iterations, tag, watchdog, cfg);
                f.parent = Usage::per_call(parent0, Usage::self(), cfg.iterations);
                f.server = Usage::per_call(server0, server.usage(), cfg.iterations);
                f.rtt = round_trip_percentiles(s);
            }
            std::cerr << "round " << r + 1 << "/" << cfg.rounds << ": ring block p50 "
                      << format_ns(round.ring.block.p50) << ", spin p50 "
                      << format_ns(round.ring.spin.p50) << "; open_context p50 "
                      << format_ns(round.ctx[0].rtt.p50) << ", run p50 "
                      << format_ns(round.ctx[1].rtt.p50) << ", run (plain) p50 "
                      << format_ns(round.ctx[2].rtt.p50) << "; cancel (park) p50 "
                      << format_ns(round.ctx[3].rtt.p50) << ", cancel (full) p50 "
                      << format_ns(round.ctx[4].rtt.p50) << "\n"
                      << std::flush;
            rounds.push_back(round);
        }
    } catch (const std::exception& e) {
        // Name the server's fate: a runtime error often starts as its crash. A dead server
        // cannot remove its own objects (our client actor is gone by now): reclaim them.
        const std::string fate = server.describe();
        if (fate != "running") {
            try {
                (void)shm::reclaim_stale(shm::Names(ns));
            } catch (const std::exception& r) {
                std::cerr << "shmctx_bench_context: reclaiming the server's objects: " << r.what()
                          << "\n";
            }
        }
        throw std::runtime_error(std::string(e.what()) + " [server " + fate + "]");
    }
    server.quit();

    print_table(cfg, *meta, placement, rounds, command, std::cout);
    if (!cfg.json_path.empty()) {
        write_json(cfg, *meta, placement, rounds, command, cfg.json_path);
        std::cout << "\nwrote " << cfg.json_path << "\n";
    }
    return 0;
}

}  // namespace
}  // namespace shmctx::bench

int main(int argc, char** argv) {
    namespace b = shmctx::bench;
    const std::vector<std::string_view> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == b::kServerFlag) return b::server_main(args);
    if (b::is_peer_invocation(args)) return b::peer_main(args);  // the harness's ring peers

    // A write to a server that died must fail with EPIPE, not kill us before we clean up.
    std::signal(SIGPIPE, SIG_IGN);

    std::string command = "shmctx_bench_context";
    for (auto a : args) (command += ' ') += a;

    // SIGINT/SIGTERM/SIGHUP stop the run between phases, so that every shared object is
    // removed (the harness's way; spawned processes get default dispositions back).
    const std::atomic<bool>& stop = b::stop_on_signals("shmctx_bench_context", "phase");

    try {
        const b::Config cfg = b::parse_config(args);
        if (cfg.help) {
            std::cout << b::context_usage();
            return 0;
        }
        return b::parent_main(cfg, command, stop);
    } catch (const std::invalid_argument& e) {
        std::cerr << "shmctx_bench_context: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "shmctx_bench_context: FAILED: " << e.what() << "\n";
        return 1;
    }
}
