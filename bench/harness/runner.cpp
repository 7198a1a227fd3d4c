// The run loops (templates over the transport) and the batch scheduler of the harness.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
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

#include "harness.hpp"
#include "message.hpp"
#include "minimal_ring.hpp"
#include "mq_transport.hpp"
#include "process.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx_fb_codec.hpp"
#include "shmctx_transport.hpp"
#include "transport.hpp"
#include "uds_transport.hpp"

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
    }
    return "?";
}

namespace {

/// Where the peer finds an inherited socket.
constexpr int kPeerFd = 100;
/// Round-trip samples discarded at the start of a run (warm-up: page faults, branch history).
constexpr std::size_t kWarmupSamples = 1000;

/// What one run needs; the peer rebuilds the same from its command line.
struct RunContext {
    std::string transport;
    ChannelSpec spec;
    Placement placement;
    Duration duration;
    Duration idle_window;
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
    RoundTripRun r;
    if (samples.size() > 2 * kWarmupSamples)
        samples.erase(samples.begin(), samples.begin() + kWarmupSamples);
    r.samples = samples.size();
    if (samples.empty()) return r;
    std::sort(samples.begin(), samples.end());
    auto at = [&](double q) {
        const auto i = static_cast<std::size_t>(q * static_cast<double>(samples.size()));
        return static_cast<double>(samples[std::min(i, samples.size() - 1)]);
    };
    r.p50 = at(0.50);
    r.p90 = at(0.90);
    r.p99 = at(0.99);
    r.p999 = at(0.999);
    r.max = static_cast<double>(samples.back());
    return r;
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
        const auto t1 = Clock::now();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t).count();
        samples.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(ns, UINT32_MAX)));
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
    double (*throughput)(const RunContext&);
    RoundTripRun (*roundtrip)(const RunContext&);
    double (*idle)(const RunContext&);
    int (*peer)(std::string_view, const ChannelSpec&);
};

template <Transport T>
constexpr Entry entry(std::string_view name, std::string_view what, bool batch_tx, bool batch_rx) {
    return {{name, what},      batch_tx,     batch_rx,    &run_throughput<T>,
            &run_roundtrip<T>, &run_idle<T>, &run_peer<T>};
}

constexpr Entry kEntries[] = {
    entry<ShmctxRing>("shmctx", "shmctx ring: try_write (publish each) + try_read/release", false,
                      false),
    entry<ShmctxRing>("shmctx-drain", "shmctx ring: try_write (publish each) + drain(batch)", false,
                      true),
    entry<ShmctxRing>("shmctx-batch", "shmctx ring: deferred publish per batch + drain(batch)",
                      true, true),
    entry<ShmctxRingFb>("shmctx-fb",
                        "shmctx ring, FlatBuffers payload (build, write, verify) + drain(batch)",
                        false, true),
    entry<MinimalRing>("minimal", "minimal fixed-slot SPSC ring, publish per message", false,
                       false),
    entry<MinimalRing>("minimal-batch", "minimal fixed-slot SPSC ring, publish per batch", true,
                       true),
    entry<BoostMessageQueue>("mq", "Boost.Interprocess message_queue", false, false),
    entry<UnixSocket>("uds", "Unix domain socket (socketpair, SOCK_SEQPACKET)", false, false),
};

const TransportInfo kInfos[] = {
    kEntries[0].info, kEntries[1].info, kEntries[2].info, kEntries[3].info,
    kEntries[4].info, kEntries[5].info, kEntries[6].info, kEntries[7].info,
};
static_assert(std::size(kInfos) == std::size(kEntries));

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
        if (err != std::errc() || end == rest.data() || *end != '.') continue;
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
        for (const Entry& e : kEntries) selected.push_back(&e);
    } else {
        for (const auto& name : options.transports) selected.push_back(&find_entry(name));
    }

    Report report;
    report.options = options;
    report.commit = git_commit(SHMCTX_BENCH_SOURCE_DIR);
    report.cpu = cpu_model();
    report.date = utc_now();
    report.build_type = SHMCTX_BENCH_BUILD_TYPE;
    report.placement = choose_placement(options.cpus);
    progress << "placement: " << report.placement.text << "\n";

    const shm::Names names(options.ns.empty() ? "bench-" + std::to_string(::getpid()) : options.ns);
    if (options.ns.empty()) remove_stale_objects(names);
    std::uint64_t counter = 0;
    const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
        options.duration + options.idle_window + std::chrono::seconds(20));

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
                for (const Entry* e : selected)
                    batch.cells.push_back({std::string(e->info.name), {}, {}});
                for (int r = 0; r < options.runs; ++r) {
                    for (std::size_t i = 0; i < selected.size(); ++i) {
                        check_stop();
                        const RunContext rc = make_context(*selected[i], size, mode);
                        try {
                            if (test == Test::throughput) {
                                batch.cells[i].msgs_per_s.push_back(selected[i]->throughput(rc));
                            } else {
                                batch.cells[i].rtt.push_back(selected[i]->roundtrip(rc));
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
