// The run loops (templates over the transport) and the batch scheduler of the harness.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <memory>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cancel.hpp"
#include "harness.hpp"
#include "message.hpp"
#include "minimal_ring.hpp"
#include "mq_transport.hpp"
#include "pipe_transport.hpp"
#include "process.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx_fb_codec.hpp"
#include "shmctx_transport.hpp"
#include "spill.hpp"
#include "stream_transport.hpp"
#include "transport.hpp"
#include "uds_transport.hpp"
#ifdef SHMCTX_BENCH_HAVE_ZMQ
#include "zmq_transport.hpp"
#endif
#ifdef SHMCTX_BENCH_HAVE_NNG
#include "nng_transport.hpp"
#endif
#ifdef SHMCTX_BENCH_HAVE_ICEORYX
#include "iceoryx_transport.hpp"
#endif

#ifndef SHMCTX_BENCH_BUILD_TYPE
#define SHMCTX_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef SHMCTX_BENCH_SOURCE_DIR
#define SHMCTX_BENCH_SOURCE_DIR "."
#endif

namespace shmctx::bench {

void fail_check(const char* where, std::uint64_t expected_seq, std::size_t expected_size,
                const std::byte* msg, std::size_t got_size) {
    std::ostringstream s;
    s << where << ": message check failed: expected seq " << expected_seq << " size "
      << expected_size << ", got size " << got_size;
    if (got_size >= kMinMessageBytes) s << " seq " << read_seq(msg);
    throw CheckFailed(s.str());
}

std::string_view to_string(Mode m) noexcept { return m == Mode::spin ? "spin" : "block"; }

std::string_view to_string(Test t) noexcept {
    switch (t) {
        case Test::throughput:
            return "throughput";
        case Test::roundtrip:
            return "roundtrip";
        case Test::idle:
            return "idle";
        case Test::fixed_rate:
            return "fixed-rate";
        case Test::spill:
            return "spill";
        case Test::cancel:
            return "cancel";
    }
    return "?";
}

namespace {

/// Where the peer finds an inherited socket.
constexpr int kPeerFd = 100;
/// Round-trip samples discarded at the start of a run (warm-up: page faults, branch history).
constexpr std::size_t kWarmupSamples = 1000;
/// Fixed rate: untimed round trips before the schedule starts (the same warm-up, not dropped
/// from the schedule: dropping scheduled samples would drop their stalls too).
constexpr std::uint64_t kFixedRateWarmup = 1000;
/// Fixed rate, block mode: the sender sleeps until this long before a message is due, then
/// spins.
constexpr std::int64_t kPacingSpinNs = 100'000;

/// What one run needs; the peer rebuilds the same from its command line.
struct RunContext {
    std::string transport;
    ChannelSpec spec;
    Placement placement;
    Duration duration;
    Duration idle_window;
    double rate = 0;  ///< fixed rate: msg/s
    std::chrono::milliseconds timeout;
    std::uint64_t inject_skip = ~std::uint64_t{0};
};

std::vector<std::string> peer_args(std::string_view role, const RunContext& rc) {
    return {"--role",       std::string(role),
            "--transport",  rc.transport,
            "--name",       rc.spec.name,
            "--size",       std::to_string(rc.spec.msg_bytes),
            "--ring-bytes", std::to_string(rc.spec.ring_bytes),
            "--batch",      std::to_string(rc.spec.batch),
            "--read-batch", std::to_string(rc.spec.read_batch),
            "--mode",       std::string(to_string(rc.spec.mode)),
            "--cpu",        std::to_string(rc.placement.peer_cpu),
            "--fd",         std::to_string(kPeerFd),
            "--timeout-ms", std::to_string(rc.timeout.count())};
}

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

/// One run's resources on the parent side. Destruction order (reverse of declaration): the
/// watch ends, the peer is killed if still running, then the link's objects are removed.
template <Transport T>
struct Started {
    std::stop_source peer_exited;
    typename T::Link link;
    Peer peer;
    PeerWatch watch;
};

/// Creates the link, spawns the peer in `role` and waits for its "ready". Every wait of the
/// run fails at once if the peer exits (PeerWatch -> ChannelSpec::stop).
template <Transport T>
std::unique_ptr<Started<T>> start(RunContext rc, std::string_view role) {
    std::stop_source peer_exited;
    rc.spec.stop = peer_exited.get_token();
    auto link = T::Link::create(rc.spec);
    Peer peer = Peer::spawn(peer_args(role, rc), link.peer_fd(), kPeerFd);
    if constexpr (requires { link.close_peer_fd(); }) link.close_peer_fd();
    const int pidfd = peer.pidfd();
    auto s = std::unique_ptr<Started<T>>(new Started<T>{
        peer_exited, std::move(link), std::move(peer), PeerWatch(pidfd, peer_exited)});
    const std::string line = s->peer.read_line(Deadline(std::chrono::seconds(10)));
    if (line != "ready") throw std::runtime_error("peer: expected \"ready\", got \"" + line + "\"");
    return s;
}

std::vector<std::byte> make_message(std::size_t size) {
    std::vector<std::byte> msg(size);
    for (std::size_t i = 0; i < size; ++i) msg[i] = static_cast<std::byte>(i * 131 + 7);
    return msg;
}

/// Parses "word n1 n2 ..." from a peer line.
std::vector<std::int64_t> parse_numbers(const std::string& line, std::string_view word) {
    std::istringstream in(line);
    std::string head;
    in >> head;
    if (head != word)
        throw std::runtime_error("peer: expected \"" + std::string(word) + " ...\", got \"" + line +
                                 "\"");
    std::vector<std::int64_t> v;
    std::int64_t x = 0;
    while (in >> x) v.push_back(x);
    return v;
}

template <Transport T>
double throughput_body(Started<T>& run, const RunContext& rc) {
    auto& link = run.link;
    auto& peer = run.peer;
    auto tx = link.sender(Dir::a_to_b);
    const std::size_t size = rc.spec.msg_bytes;
    std::vector<std::byte> msg = make_message(size);
    peer.write_line("go");
    const auto t0 = Clock::now();
    const auto end = t0 + rc.duration;
    std::uint64_t seq = 0;
    for (;;) {
        stamp(msg.data(), size, seq == rc.inject_skip ? seq + 1 : seq);
        tx.send(msg.data(), size);
        ++seq;
        if ((seq & 63U) == 0 && Clock::now() >= end) break;
    }
    stamp(msg.data(), size, kEndSeq);
    tx.send(msg.data(), size);
    tx.flush();
    const auto done = parse_numbers(peer.read_line(Deadline(rc.timeout)), "done");
    peer.wait_success(Deadline(std::chrono::seconds(10)));
    if (done.size() != 2 || done[0] != static_cast<std::int64_t>(seq))
        throw CheckFailed("throughput: producer sent " + std::to_string(seq) +
                          " messages, consumer reported \"" +
                          std::to_string(done.empty() ? -1 : done[0]) + "\"");
    const double seconds =
        static_cast<double>(
            done[1] -
            std::chrono::duration_cast<std::chrono::nanoseconds>(t0.time_since_epoch()).count()) /
        1e9;
    if (seconds <= 0) throw std::runtime_error("throughput: non-positive duration");
    return static_cast<double>(seq) / seconds;
}

RoundTripRun percentiles(std::vector<std::uint32_t>& samples) {
    if (samples.size() > 2 * kWarmupSamples)
        samples.erase(samples.begin(), samples.begin() + kWarmupSamples);
    return percentiles_of(samples);
}

/// Sends message `seq` and waits for its echo (checked).
template <class Tx, class Rx>
void ping(Tx& tx, Rx& rx, std::vector<std::byte>& msg, std::uint64_t seq) {
    const std::size_t size = msg.size();
    stamp(msg.data(), size, seq);
    tx.send(msg.data(), size);
    tx.flush();
    bool got = false;
    while (!got) {
        rx.receive([&](const std::byte* p, std::size_t n) {
            if (got || !check("round trip (parent)", p, n, size, seq))
                throw CheckFailed("round trip: unexpected extra message or end marker");
            got = true;
        });
    }
}

template <Transport T>
RoundTripRun roundtrip_body(Started<T>& run, const RunContext& rc) {
    auto& link = run.link;
    auto& peer = run.peer;
    auto tx = link.sender(Dir::a_to_b);
    auto rx = link.receiver(Dir::b_to_a);  // after "ready": the peer has set up its direction
    const std::size_t size = rc.spec.msg_bytes;
    std::vector<std::byte> msg = make_message(size);
    std::vector<std::uint32_t> samples;
    samples.reserve(1 << 20);
    peer.write_line("go");
    const auto end = Clock::now() + rc.duration;
    auto t = Clock::now();
    for (std::uint64_t seq = 0;; ++seq) {
        ping(tx, rx, msg, seq);
        const auto t1 = Clock::now();
        samples.push_back(saturated_ns(t1 - t));
        t = t1;
        if (t1 >= end) break;
    }
    stamp(msg.data(), size, kEndSeq);
    tx.send(msg.data(), size);
    tx.flush();
    (void)parse_numbers(peer.read_line(Deadline(rc.timeout)), "done");
    peer.wait_success(Deadline(std::chrono::seconds(10)));
    return percentiles(samples);
}

/// Fixed rate: message i is due at start + i / rate; the parent waits until then (unless it is
/// already late), sends, waits for the echo, and records both times (FixedRateRecorder: the
/// latency from the intended time is the coordinated-omission corrected one). One message is in
/// flight at a time, so a slow reply delays the next sends and the correction charges them.
template <Transport T>
std::pair<FixedRateRun, std::vector<std::uint32_t>> fixed_rate_body(Started<T>& run,
                                                                    const RunContext& rc) {
    auto& link = run.link;
    auto& peer = run.peer;
    auto tx = link.sender(Dir::a_to_b);
    auto rx = link.receiver(Dir::b_to_a);
    const std::size_t size = rc.spec.msg_bytes;
    std::vector<std::byte> msg = make_message(size);
    const double period_ns = 1e9 / rc.rate;
    const auto count = static_cast<std::size_t>(
        std::max(1.0, rc.rate * std::chrono::duration<double>(rc.duration).count()));
    FixedRateRecorder recorder(period_ns, count);
    const RunGuard guard = RunGuard::of(rc.spec);
    peer.write_line("go");
    std::uint64_t seq = 0;
    for (; seq < kFixedRateWarmup; ++seq) ping(tx, rx, msg, seq);
    const auto start = Clock::now();
    auto since_start = [&start](Clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t - start).count();
    };
    // A rate the transport cannot sustain would make the run last count x round trip: stop
    // sending at this limit (the rest are recorded as unsent, with the time they had waited).
    const std::int64_t limit_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            fixed_rate_limit(std::chrono::duration_cast<std::chrono::milliseconds>(rc.duration)))
            .count();
    std::size_t i = 0;
    for (; i < count; ++i, ++seq) {
        const std::int64_t due = recorder.intended_ns(i);
        auto now = Clock::now();
        if (since_start(now) > limit_ns) break;
        // Waiting for the schedule is pacing, part of the method (not synchronisation). Spin
        // mode spins to the due time. Block mode sleeps when the due time is far (a block-mode
        // sender at a modest rate is no CPU hog, and a sleeper gets the CPU back promptly on a
        // shared machine) and spins the last kPacingSpinNs, so that a timer's wake-up jitter
        // is not charged to the transport.
        if (rc.spec.mode == Mode::block && due - since_start(now) > 2 * kPacingSpinNs) {
            std::this_thread::sleep_until(start + std::chrono::nanoseconds(due - kPacingSpinNs));
            now = Clock::now();
        }
        for (std::uint32_t rounds = 0; since_start(now) < due; now = Clock::now())
            if ((++rounds & 1023U) == 0) check_peer(guard, "fixed rate: waiting for the schedule");
        ping(tx, rx, msg, seq);
        recorder.record(since_start(now), since_start(Clock::now()));
    }
    const std::int64_t stopped_ns = since_start(Clock::now());
    for (; i < count; ++i) recorder.record_unsent(stopped_ns);
    stamp(msg.data(), size, kEndSeq);
    tx.send(msg.data(), size);
    tx.flush();
    (void)parse_numbers(peer.read_line(Deadline(rc.timeout)), "done");
    peer.wait_success(Deadline(std::chrono::seconds(10)));
    FixedRateRun r = recorder.finish();
    return {r, recorder.corrected_samples()};
}

template <Transport T>
double idle_body(Started<T>& run, const RunContext& rc) {
    auto& link = run.link;
    auto& peer = run.peer;
    auto tx = link.sender(Dir::a_to_b);
    std::vector<std::byte> msg = make_message(rc.spec.msg_bytes);
    peer.write_line("go");
    // The idle window itself: the peer sits blocked in receive() while we send nothing. This
    // sleep is the measured interval, not synchronisation.
    std::this_thread::sleep_for(rc.idle_window);
    stamp(msg.data(), msg.size(), kEndSeq);
    tx.send(msg.data(), msg.size());
    tx.flush();
    const auto v = parse_numbers(peer.read_line(Deadline(rc.timeout)), "idle");
    peer.wait_success(Deadline(std::chrono::seconds(10)));
    if (v.size() != 2 || v[1] <= 0) throw std::runtime_error("idle: bad peer report");
    return 100.0 * static_cast<double>(v[0]) / static_cast<double>(v[1]);
}

/// Runs `body` on a started peer; a failure names the peer's fate (its own message, if it
/// failed a check, is on stderr just before).
template <Transport T, class Body>
auto with_peer(const RunContext& rc, std::string_view role, Body body) {
    const auto run = start<T>(rc, role);
    try {
        return body(*run, rc);
    } catch (const std::exception& e) {
        run->peer.wait_exit(Deadline(std::chrono::milliseconds(200)));
        throw std::runtime_error(std::string(e.what()) + " [peer " + run->peer.describe() + "]");
    }
}

template <Transport T>
double run_throughput(const RunContext& rc) {
    return with_peer<T>(rc, "consumer", &throughput_body<T>);
}
template <Transport T>
RoundTripRun run_roundtrip(const RunContext& rc) {
    return with_peer<T>(rc, "echo", &roundtrip_body<T>);
}
template <Transport T>
double run_idle(const RunContext& rc) {
    return with_peer<T>(rc, "idle", &idle_body<T>);
}
template <Transport T>
std::pair<FixedRateRun, std::vector<std::uint32_t>> run_fixed_rate(const RunContext& rc) {
    return with_peer<T>(rc, "echo", &fixed_rate_body<T>);
}

// ---- peer side ----

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

void await_go() {
    char buf[64];
    if (std::fgets(buf, sizeof buf, stdin) == nullptr || std::string_view(buf) != "go\n")
        throw std::runtime_error("peer: parent went away before \"go\"");
}

std::int64_t cpu_ns() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval& tv) {
        return static_cast<std::int64_t>(tv.tv_sec) * 1'000'000'000 +
               static_cast<std::int64_t>(tv.tv_usec) * 1000;
    };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

template <Transport T>
int run_peer(std::string_view role, const ChannelSpec& spec) {
    auto link = T::Link::open(spec);
    const std::size_t size = spec.msg_bytes;
    if (role == "consumer") {
        auto rx = link.receiver(Dir::a_to_b);
        say("ready");
        await_go();
        std::uint64_t expected = 0;
        bool end = false;
        while (!end) {
            rx.receive([&](const std::byte* p, std::size_t n) {
                if (end) throw CheckFailed("consumer: message after the end marker");
                if (check("consumer", p, n, size, expected)) {
                    ++expected;
                } else {
                    end = true;
                }
            });
        }
        say("done " + std::to_string(expected) + " " + std::to_string(now_ns()));
        return 0;
    }
    if (role == "echo") {
        auto rx = link.receiver(Dir::a_to_b);
        auto tx = link.sender(Dir::b_to_a);
        say("ready");
        await_go();
        std::uint64_t expected = 0;
        bool end = false;
        while (!end) {
            rx.receive([&](const std::byte* p, std::size_t n) {
                if (end) throw CheckFailed("echo: message after the end marker");
                if (check("echo", p, n, size, expected)) {
                    tx.send(p, n);
                    ++expected;
                } else {
                    end = true;
                }
            });
            tx.flush();
        }
        say("done " + std::to_string(expected));
        return 0;
    }
    if (role == "idle") {
        auto rx = link.receiver(Dir::a_to_b);
        say("ready");
        await_go();
        const std::int64_t c0 = cpu_ns();
        const std::int64_t t0 = now_ns();
        bool end = false;
        while (!end) {
            rx.receive([&](const std::byte* p, std::size_t n) {
                if (check("idle", p, n, size, 0))
                    throw CheckFailed("idle: data during the idle window");
                end = true;
            });
        }
        say("idle " + std::to_string(cpu_ns() - c0) + " " + std::to_string(now_ns() - t0));
        return 0;
    }
    throw std::invalid_argument("unknown peer role \"" + std::string(role) + "\"");
}

// ---- registry ----

struct Entry {
    TransportInfo info;
    bool batched_producer;
    bool batched_consumer;
    double (*throughput)(const RunContext&);  ///< nullptr: no one-way stream (REQ/REP)
    RoundTripRun (*roundtrip)(const RunContext&);
    double (*idle)(const RunContext&);
    std::pair<FixedRateRun, std::vector<std::uint32_t>> (*fixed_rate)(const RunContext&);
    int (*peer)(std::string_view, const ChannelSpec&);
};

/// What a transport can run.
enum class Runs : std::uint8_t { all, no_throughput };

template <Transport T>
constexpr Entry entry(TransportInfo info, bool batch_tx, bool batch_rx, Runs runs = Runs::all) {
    return {info,
            batch_tx,
            batch_rx,
            runs == Runs::all ? &run_throughput<T> : nullptr,
            &run_roundtrip<T>,
            &run_idle<T>,
            &run_fixed_rate<T>,
            &run_peer<T>};
}

// Peers (TransportInfo::peer) run only when asked for: by name or with --peers.
constexpr Entry kEntries[] = {
    entry<ShmctxRing>({"shmctx", "shmctx ring: try_write (publish each) + try_read/release"}, false,
                      false),
    entry<ShmctxRing>({"shmctx-drain", "shmctx ring: try_write (publish each) + drain(batch)"},
                      false, true),
    entry<ShmctxRing>({"shmctx-batch", "shmctx ring: deferred publish per batch + drain(batch)"},
                      true, true),
    entry<ShmctxRingFb>(
        {"shmctx-fb", "shmctx ring, FlatBuffers payload (build, write, verify) + drain(batch)"},
        false, true),
    entry<ShmctxStreamReceive>(
        {"shmctx-stream", "shmctx MsgStream (actors, a context): send + receive"}, false, false),
    entry<ShmctxStreamDrain>(
        {"shmctx-stream-drain", "shmctx MsgStream (actors, a context): send + drain(batch)"}, false,
        true),
    entry<ShmctxStreamBatch>(
        {"shmctx-stream-batch",
         "shmctx MsgStream (actors, a context): send_many(batch) + drain(batch)"},
        true, true),
    entry<MinimalRing>({"minimal", "minimal fixed-slot SPSC ring, publish per message"}, false,
                       false),
    entry<MinimalRing>({"minimal-batch", "minimal fixed-slot SPSC ring, publish per batch"}, true,
                       true),
    entry<BoostMessageQueue>({"mq", "Boost.Interprocess message_queue"}, false, false),
    entry<UnixSocket>({"uds", "Unix domain socket (socketpair, SOCK_SEQPACKET)"}, false, false),
    entry<PipeTransport>({"pipe", "pipe (a FIFO per direction), read/write", true}, false, true),
#ifdef SHMCTX_BENCH_HAVE_ZMQ
    entry<ZmqPushPull>({"zmq", "ZeroMQ ipc:// PUSH/PULL, a socket pair per direction", true}, false,
                       false),
    entry<ZmqReqRep>({"zmq-reqrep", "ZeroMQ ipc:// REQ/REP (round trip and idle only)", true},
                     false, false, Runs::no_throughput),
#endif
#ifdef SHMCTX_BENCH_HAVE_NNG
    entry<NngPushPull>({"nng", "nng ipc:// PUSH/PULL, a socket pair per direction", true}, false,
                       false),
#endif
#ifdef SHMCTX_BENCH_HAVE_ICEORYX
    entry<IceoryxTransport>(
        {"iceoryx", "iceoryx 2.0 publish/subscribe (RouDi started by the harness), copy in", true},
        false, true),
#endif
};

template <std::size_t... I>
constexpr std::array<TransportInfo, sizeof...(I)> infos_of(std::index_sequence<I...>) {
    return {kEntries[I].info...};
}
constexpr auto kInfos = infos_of(std::make_index_sequence<std::size(kEntries)>{});

const Entry& find_entry(std::string_view name) {
    for (const Entry& e : kEntries)
        if (e.info.name == name) return e;
    throw std::invalid_argument("unknown transport \"" + std::string(name) + "\" (see --list)");
}

/// Removes /dev/shm objects of earlier harness processes that no longer exist (an aborted run
/// killed with SIGKILL cannot clean up after itself).
void remove_stale_objects(const shm::Names& ours) {
    const std::string root = "shmctx." + std::to_string(ours.euid()) + ".bench-";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(shm::kShmDir, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(root, 0) != 0) continue;
        const std::string rest = name.substr(root.size());
        long pid = 0;
        const auto [end, err] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
        if (err != std::errc() || end == rest.data() || (*end != '.' && *end != '-')) continue;
        if (*end == '-') {
            // "bench-<pid>-spill." and "bench-<pid>-cancel.": the actor tests' namespaces.
            const std::string_view tail(end, rest.data() + rest.size());
            if (tail.rfind("-spill.", 0) != 0 && tail.rfind("-cancel.", 0) != 0) continue;
        }
        if (pid == ::getpid()) continue;
        if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
            (void)shm::Segment::remove(name);
    }
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace

std::span<const TransportInfo> transports() { return kInfos; }

RoundTripRun round_trip_percentiles(std::vector<std::uint32_t>& samples) {
    return percentiles(samples);
}

Stat summarize(std::vector<double> values) {
    Stat s;
    if (values.empty()) return s;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    s.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    s.min = values.front();
    s.max = values.back();
    return s;
}

Report run(const Options& options, std::ostream& progress) {
    std::vector<const Entry*> selected;
    if (options.transports.empty()) {
        for (const Entry& e : kEntries)
            if (!e.info.peer || options.peers) selected.push_back(&e);
    } else {
        for (const auto& name : options.transports) selected.push_back(&find_entry(name));
    }

    const AffinityScope affinity;  // run() pins this thread for the transport tests
    Report report;
    report.options = options;
    report.commit = git_commit(SHMCTX_BENCH_SOURCE_DIR);
    report.cpu = cpu_model();
    report.online_cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
    report.virtual_cpus = cpus_are_virtual();
    report.date = utc_now();
    report.build_type = SHMCTX_BENCH_BUILD_TYPE;
    report.placement = choose_placement(options.cpus);
    progress << "placement: " << report.placement.text << "\n";

    const shm::Names names(options.ns.empty() ? "bench-" + std::to_string(::getpid()) : options.ns);
    if (options.ns.empty()) remove_stale_objects(names);
    std::uint64_t counter = 0;
    // Every wait is bounded by this: the longest run (a fixed-rate run stops sending at
    // fixed_rate_limit) plus a margin for a loaded machine.
    const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::max(options.duration, fixed_rate_limit(options.fixed_rate_duration)) +
        options.idle_window + std::chrono::seconds(20));

    auto make_context = [&](const Entry& e, std::size_t size, Mode mode) {
        RunContext rc;
        rc.transport = std::string(e.info.name);
        rc.spec.name = names.prefix() + "r" + std::to_string(counter++);
        rc.spec.msg_bytes = size;
        rc.spec.ring_bytes = options.ring_bytes;
        rc.spec.batch = e.batched_producer ? options.batch : 1;
        rc.spec.read_batch = e.batched_consumer ? options.batch : 1;
        rc.spec.mode = mode;
        rc.spec.deadline = Deadline(timeout);
        rc.placement = report.placement;
        rc.duration = options.duration;
        rc.idle_window = options.idle_window;
        rc.timeout = timeout;
        rc.inject_skip = options.inject_skip;
        return rc;
    };
    auto check_stop = [&] {
        // relaxed: a flag polled between runs; it guards no data.
        if (options.stop != nullptr && options.stop->load(std::memory_order::relaxed))
            throw std::runtime_error("interrupted");
    };
    auto has = [&](Test t) {
        return std::find(options.tests.begin(), options.tests.end(), t) != options.tests.end();
    };

    for (Test test : {Test::throughput, Test::roundtrip}) {
        if (!has(test)) continue;
        const auto& sizes = test == Test::throughput ? options.sizes : options.rtt_sizes;
        for (Mode mode : options.modes) {
            for (std::size_t size : sizes) {
                check_stop();
                Batch batch;
                batch.test = test;
                batch.mode = mode;
                batch.size = size;
                batch.c2c = measure_cacheline_rtt(names.prefix() + "r" + std::to_string(counter++),
                                                  report.placement, options.c2c_round_trips);
                batch.memcpy = measure_memcpy(64 * 1024, options.ring_bytes, 5, 4);
                // A transport without a one-way stream (REQ/REP) sits out throughput batches.
                std::vector<const Entry*> in_batch;
                for (const Entry* e : selected)
                    if (test != Test::throughput || e->throughput != nullptr) in_batch.push_back(e);
                for (const Entry* e : in_batch)
                    batch.cells.push_back({std::string(e->info.name), {}, {}, {}, {}});
                for (int r = 0; r < options.runs; ++r) {
                    for (std::size_t i = 0; i < in_batch.size(); ++i) {
                        check_stop();
                        const RunContext rc = make_context(*in_batch[i], size, mode);
                        try {
                            if (test == Test::throughput) {
                                batch.cells[i].msgs_per_s.push_back(in_batch[i]->throughput(rc));
                            } else {
                                batch.cells[i].rtt.push_back(in_batch[i]->roundtrip(rc));
                            }
                        } catch (const std::exception& e) {
                            throw std::runtime_error(
                                std::string(to_string(test)) + " " + rc.transport + " " +
                                std::to_string(size) + " B " + std::string(to_string(mode)) +
                                " run " + std::to_string(r + 1) + ": " + e.what());
                        }
                    }
                }
                progress << to_string(test) << " " << size << " B " << to_string(mode)
                         << ": done (c2c " << std::fixed << std::setprecision(0)
                         << batch.c2c.median_ns << " ns)\n"
                         << std::flush;
                report.batches.push_back(std::move(batch));
            }
        }
    }
    if (has(Test::fixed_rate)) {
        for (Mode mode : options.modes) {
            for (double rate : options.rates) {
                check_stop();
                Batch batch;
                batch.test = Test::fixed_rate;
                batch.mode = mode;
                batch.size = options.fixed_rate_size;
                batch.rate = rate;
                batch.c2c = measure_cacheline_rtt(names.prefix() + "r" + std::to_string(counter++),
                                                  report.placement, options.c2c_round_trips);
                batch.memcpy = measure_memcpy(64 * 1024, options.ring_bytes, 5, 4);
                std::vector<std::vector<std::uint32_t>> pooled(selected.size());
                for (const Entry* e : selected)
                    batch.cells.push_back({std::string(e->info.name), {}, {}, {}, {}});
                for (int r = 0; r < options.fixed_rate_run_count(); ++r) {
                    for (std::size_t i = 0; i < selected.size(); ++i) {
                        check_stop();
                        RunContext rc = make_context(*selected[i], batch.size, mode);
                        rc.rate = rate;
                        rc.duration = options.fixed_rate_duration;
                        try {
                            auto [run, samples] = selected[i]->fixed_rate(rc);
                            batch.cells[i].fixed.push_back(run);
                            pooled[i].insert(pooled[i].end(), samples.begin(), samples.end());
                        } catch (const std::exception& e) {
                            throw std::runtime_error("fixed-rate " + rc.transport + " " +
                                                     format_rate(rate) + " " +
                                                     std::string(to_string(mode)) + " run " +
                                                     std::to_string(r + 1) + ": " + e.what());
                        }
                    }
                }
                for (std::size_t i = 0; i < selected.size(); ++i) {
                    std::sort(pooled[i].begin(), pooled[i].end());
                    batch.cells[i].curve = percentile_curve(pooled[i]);
                }
                progress << "fixed-rate " << format_rate(rate) << " " << to_string(mode)
                         << ": done (c2c " << std::fixed << std::setprecision(0)
                         << batch.c2c.median_ns << " ns)\n"
                         << std::flush;
                report.batches.push_back(std::move(batch));
            }
        }
    }
    if (has(Test::idle)) {
        for (const Entry* e : selected) {
            check_stop();
            const RunContext rc = make_context(*e, 64, Mode::block);
            try {
                report.idle.push_back(
                    {rc.transport, e->idle(rc), static_cast<double>(options.idle_window.count())});
            } catch (const std::exception& ex) {
                throw std::runtime_error("idle " + rc.transport + ": " + ex.what());
            }
        }
        progress << "idle: done\n" << std::flush;
    }
    // The actor tests get the caller's mask back: the spill test runs where the scheduler
    // puts it (it pins its consumer's thread itself), the cancel test pins client and server
    // like the ring tests (CancelOptions), for its ratios to the ring's round trip.
    affinity.restore();
    const std::string actor_ns = names.ns();
    if (has(Test::spill)) {
        check_stop();
        try {
            report.spill = run_spill(options.spill, actor_ns + "-spill", progress);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("spill test: ") + e.what());
        }
        progress << "spill: done\n" << std::flush;
    }
    if (has(Test::cancel)) {
        check_stop();
        try {
            CancelOptions cancel = options.cancel;
            cancel.client_cpu = report.placement.parent_cpu;
            cancel.server_cpu = report.placement.peer_cpu;
            report.cancel = run_cancel(cancel, actor_ns + "-cancel", progress);
        } catch (const std::exception& e) {
            throw std::runtime_error(std::string("cancel test: ") + e.what());
        }
        progress << "cancel: done\n" << std::flush;
    }
    return report;
}

bool is_peer_invocation(std::span<const std::string_view> args) {
    return !args.empty() && args[0] == "--role";
}

int peer_main(std::span<const std::string_view> args) {
    std::string role;
    std::string transport;
    std::string name;
    ChannelSpec spec;
    int cpu = -1;
    long timeout_ms = 30000;
    // The actor tests' servers take their own arguments.
    if (args.size() >= 2 && args[1] == kStreamServerRole) return stream_server_main(args);
    if (args.size() >= 2 && args[1] == kCancelServerRole) return cancel_server_main(args);
    try {
        auto number = [](std::string_view key, std::string_view v) {
            long x = 0;
            const auto [end, err] = std::from_chars(v.data(), v.data() + v.size(), x);
            if (err != std::errc() || end != v.data() + v.size())
                throw std::invalid_argument("peer: bad value for " + std::string(key));
            return x;
        };
        for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
            const std::string_view k = args[i];
            const std::string_view v = args[i + 1];
            if (k == "--role")
                role = v;
            else if (k == "--transport")
                transport = v;
            else if (k == "--name")
                name = v;
            else if (k == "--size")
                spec.msg_bytes = static_cast<std::size_t>(number(k, v));
            else if (k == "--ring-bytes")
                spec.ring_bytes = static_cast<std::size_t>(number(k, v));
            else if (k == "--batch")
                spec.batch = static_cast<std::uint32_t>(number(k, v));
            else if (k == "--read-batch")
                spec.read_batch = static_cast<std::uint32_t>(number(k, v));
            else if (k == "--mode")
                spec.mode = v == "block" ? Mode::block : Mode::spin;
            else if (k == "--cpu")
                cpu = static_cast<int>(number(k, v));
            else if (k == "--fd")
                spec.fd = static_cast<int>(number(k, v));
            else if (k == "--timeout-ms")
                timeout_ms = number(k, v);
            else
                throw std::invalid_argument("peer: unknown argument " + std::string(k));
        }
        spec.name = name;
        spec.deadline = Deadline(std::chrono::milliseconds(timeout_ms));
        // Die with the harness: a SIGKILLed parent must not leave a spinning peer behind.
        if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() == 1)
            throw std::runtime_error("peer: parent already gone");
        pin_to(cpu);
        if (role == "cacheline") return cacheline_peer(name, spec.deadline);

        return find_entry(transport).peer(role, spec);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx_perf_harness peer (%s %s %zu B): FAILED: %s\n", role.c_str(),
                     transport.c_str(), spec.msg_bytes, e.what());
        return 3;
    }
}

}  // namespace shmctx::bench
