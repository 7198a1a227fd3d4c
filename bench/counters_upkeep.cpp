// What the ring's counters cost (issue 10: "counter upkeep costs <= 2 % of throughput, measure
// it"; method and figures in bench/README.md §11).
//
// The per-message counter stores live in the ring's inline hot path (ring.hpp: written_msgs and
// payload_bytes per publish, full_events per refused push). This program is built twice from
// this file: `shmctx_bench_counters` with them (the library as shipped) and
// `shmctx_bench_counters_off` with SHMCTX_RING_COUNTERS=0 (its own copy of ring.cpp compiled the
// same way, so no code of the other variant can be linked in). The actor counters of
// actor_counters.hpp are per event (context, cancel, link), never per message, so they are not
// on this path at all.
//
//   shmctx_bench_counters [--runs N] [--messages M] [--sizes 16,64,256] [--batch B] [--modes 2,1]
//       runs `run` and then `single` of both variants as child processes, interleaved (on, off,
//       on, off, ...; the first of each pair alternates), prints every run, the medians (and
//       best runs) per variant, mode and size, and the cost: 1 - median(on) / median(off)
//   shmctx_bench_counters{,_off} run <size> <messages> <batch>
//       two threads: a producer writes <messages> records of <size> bytes into a 1 MiB ring
//       (publishing every <batch> records), a consumer on the other core reads and checks each
//       (busy-spin, no wakes: the path where a store costs most; throughput as between two
//       processes, the cache lines move between cores the same way); prints "rate <msgs/s> ..."
//   shmctx_bench_counters{,_off} single <size> <messages> <batch>
//       one thread writes 64 records, reads them, and so on: the instruction cost alone
//
// Every message carries its sequence number, checked by the consumer: a variant that stopped
// moving correct data fails instead of getting faster.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "aligned_region.hpp"
#include "shmctx/shm/layout.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"

extern char** environ;

namespace {

using namespace shmctx;

using shmctx::bench::AlignedRegion;

constexpr std::size_t kRingDataBytes = 1 << 20;
constexpr std::uint16_t kKind = 1;

/// Involuntary context switches of the calling thread so far: a run during which a measuring
/// thread was preempted (the VM's two cores are shared) measures the scheduler, not the ring.
long preemptions() {
    rusage u{};
    (void)::getrusage(RUSAGE_THREAD, &u);
    return u.ru_nivcsw;
}

/// Preemptions of the measuring threads during the measured section of this run.
std::atomic<long> g_preempted{0};

void pin(unsigned cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % std::max(1U, std::thread::hardware_concurrency()), &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);  // best effort
}

/// One measurement; returns messages per second.
double run_once(std::size_t size, std::uint64_t messages, std::uint32_t batch) {
    AlignedRegion wakes(2 * sizeof(shm::WakeSlot));
    AlignedRegion region(shm::ring_region_bytes(kRingDataBytes));
    shm::WakeTable table(wakes.span());
    shm::RingParams params;
    params.data_bytes = kRingDataBytes;
    params.capacity_msgs = kRingDataBytes / shm::kRecordAlign;
    shm::RingWriter writer = shm::RingWriter::create(region.span(), params, table);
    shm::RingReader reader = shm::RingReader::attach(region.span(), 0, table);
    std::atomic<int> ready{0};
    std::atomic<bool> bad{false};
    std::thread consumer([&] {
        pin(1);
        ready.fetch_add(1, std::memory_order::acq_rel);
        while (ready.load(std::memory_order::acquire) < 2) {
        }
        const long switches = preemptions();
        // relaxed: read after join().
        struct Count {
            long at_start;
            ~Count() {
                g_preempted.fetch_add(preemptions() - at_start, std::memory_order::relaxed);
            }
        } count{switches};
        std::uint64_t expect = 0;
        while (expect < messages) {
            shm::RecordView v;
            const shm::ReadResult r = reader.try_read(v);
            if (r == shm::ReadResult::empty) {
                shm::cpu_relax();
                continue;
            }
            std::uint64_t seq = ~std::uint64_t{0};
            if (r != shm::ReadResult::ok || v.payload.size() != size) {
                bad.store(true, std::memory_order::relaxed);
                return;
            }
            std::memcpy(&seq, v.payload.data(), sizeof seq);
            if (seq != expect) {
                bad.store(true, std::memory_order::relaxed);
                return;
            }
            reader.release();
            ++expect;
        }
    });
    pin(0);
    std::vector<std::byte> msg(size, std::byte{0x5a});
    ready.fetch_add(1, std::memory_order::acq_rel);
    while (ready.load(std::memory_order::acquire) < 2) {
    }
    const long switches = preemptions();
    const auto t0 = std::chrono::steady_clock::now();
    for (std::uint64_t i = 0; i < messages; ++i) {
        std::memcpy(msg.data(), &i, sizeof i);
        const bool last_of_batch = (i + 1) % batch == 0 || i + 1 == messages;
        const shm::Publish mode = last_of_batch ? shm::Publish::now : shm::Publish::deferred;
        for (;;) {
            const shm::WriteResult r = writer.try_write(kKind, msg, 0, mode);
            if (r == shm::WriteResult::ok) break;
            if (r != shm::WriteResult::full_bytes && r != shm::WriteResult::full_msgs) {
                throw std::runtime_error("try_write failed");
            }
            // Full: what is deferred must become visible, or the consumer never frees space.
            if (writer.publish() != shm::WriteResult::ok) throw std::runtime_error("publish");
            shm::cpu_relax();
        }
        if (bad.load(std::memory_order::relaxed)) break;
    }
    // relaxed: read in main() after this returns.
    g_preempted.fetch_add(preemptions() - switches, std::memory_order::relaxed);
    consumer.join();
    const auto t1 = std::chrono::steady_clock::now();
    if (bad.load(std::memory_order::relaxed)) throw std::runtime_error("message check failed");
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    return static_cast<double>(messages) / secs;
}

/// One thread alternates: writes `batch` records (publishing after the last; at most 64 per
/// round), then reads and checks them. No cache line moves between cores: this is the
/// instruction cost of the counter stores alone, steady on a loaded machine where the
/// two-thread figure is not.
double run_single(std::size_t size, std::uint64_t messages, std::uint32_t batch) {
    AlignedRegion wakes(2 * sizeof(shm::WakeSlot));
    AlignedRegion region(shm::ring_region_bytes(kRingDataBytes));
    shm::WakeTable table(wakes.span());
    shm::RingParams params;
    params.data_bytes = kRingDataBytes;
    params.capacity_msgs = kRingDataBytes / shm::kRecordAlign;
    shm::RingWriter writer = shm::RingWriter::create(region.span(), params, table);
    shm::RingReader reader = shm::RingReader::attach(region.span(), 0, table);
    std::vector<std::byte> msg(size, std::byte{0x5a});
    constexpr std::uint32_t per_round = 64;  // records written before they are read
    const long switches = preemptions();
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t expect = 0;
    for (std::uint64_t i = 0; i < messages;) {
        const std::uint64_t end = std::min<std::uint64_t>(messages, i + per_round);
        for (; i < end; ++i) {
            std::memcpy(msg.data(), &i, sizeof i);
            const shm::Publish mode =
                (i + 1) % batch == 0 || i + 1 == end ? shm::Publish::now : shm::Publish::deferred;
            if (writer.try_write(kKind, msg, 0, mode) != shm::WriteResult::ok) {
                throw std::runtime_error("try_write failed");
            }
        }
        while (expect < end) {
            shm::RecordView v;
            std::uint64_t seq = ~std::uint64_t{0};
            if (reader.try_read(v) != shm::ReadResult::ok || v.payload.size() != size) {
                throw std::runtime_error("try_read failed");
            }
            std::memcpy(&seq, v.payload.data(), sizeof seq);
            if (seq != expect) throw std::runtime_error("message check failed");
            reader.release();
            ++expect;
        }
    }
    const auto t1 = std::chrono::steady_clock::now();
    // relaxed: read in main() after this returns.
    g_preempted.fetch_add(preemptions() - switches, std::memory_order::relaxed);
    return static_cast<double>(messages) / std::chrono::duration<double>(t1 - t0).count();
}

struct Run {
    double rate = 0;
    long preempted = 0;
};

Run run_child(const std::string& exe, const char* mode, std::size_t size, std::uint64_t messages,
              std::uint32_t batch) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    const std::string s = std::to_string(size), m = std::to_string(messages),
                      b = std::to_string(batch);
    std::vector<char*> argv = {const_cast<char*>(exe.c_str()), const_cast<char*>(mode),
                               const_cast<char*>(s.c_str()),   const_cast<char*>(m.c_str()),
                               const_cast<char*>(b.c_str()),   nullptr};
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (rc != 0) {
        ::close(fds[0]);
        throw std::runtime_error("posix_spawn " + exe + ": " + std::strerror(rc));
    }
    std::string out;
    char buf[256];
    for (;;) {
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    Run run;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        std::sscanf(out.c_str(), "rate %lf preempted %ld", &run.rate, &run.preempted) != 2) {
        throw std::runtime_error(exe + " run failed: '" + out + "'");
    }
    return run;
}

const char* label(const char* mode) { return std::string(mode) == "run" ? "2-thread" : "1-thread"; }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::vector<std::size_t> parse_sizes(const std::string& text) {
    std::vector<std::size_t> out;
    std::size_t pos = 0;
    while (pos < text.size()) {
        const std::size_t comma = text.find(',', pos);
        const std::string item = text.substr(pos, comma - pos);
        const unsigned long v = std::strtoul(item.c_str(), nullptr, 10);
        if (v < 8 || v > 65536) throw std::runtime_error("sizes are 8..65536: '" + item + "'");
        out.push_back(v);
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

int compare(int argc, char** argv) {
    int runs = 7;
    std::uint64_t messages = 4'000'000;
    std::uint32_t batch = 1;
    std::vector<std::size_t> sizes = {16, 64, 256};
    bool two_thread = true;  // --modes 2,1: which of the two modes run
    bool one_thread = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) throw std::runtime_error("missing value for " + a);
        if (a == "--runs") {
            runs = std::max(1, std::atoi(argv[++i]));
        } else if (a == "--messages") {
            messages = std::max<std::uint64_t>(1, std::strtoull(argv[++i], nullptr, 10));
        } else if (a == "--sizes") {
            sizes = parse_sizes(argv[++i]);
        } else if (a == "--modes") {
            const std::string m = argv[++i];
            two_thread = m.find('2') != std::string::npos;
            one_thread = m.find('1') != std::string::npos;
        } else if (a == "--batch") {
            batch = static_cast<std::uint32_t>(std::max(1, std::atoi(argv[++i])));
        } else {
            throw std::runtime_error("unknown option " + a);
        }
    }
    // Both variants sit side by side in the build's bench directory.
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) throw std::runtime_error("readlink /proc/self/exe failed");
    const std::string on(self, static_cast<std::size_t>(n));
    const std::string off = on + "_off";
    std::printf(
        "counter upkeep: %d interleaved runs per variant, %llu messages of each size (x10 "
        "with one thread), publish every %u, busy-spin consumer on the other core\n",
        runs, static_cast<unsigned long long>(messages), batch);
    for (const char* mode : {"run", "single"}) {
        if (std::string(mode) == "run" ? !two_thread : !one_thread) continue;
        for (const std::size_t size : sizes) {
            std::vector<double> with, without;
            int preempted = 0;  // runs in which a measuring thread was preempted
            for (int r = 0; r < runs; ++r) {
                // Alternate which variant goes first, so a drift in the machine's state (the VM's
                // cores moving "near" or "far") falls on both equally.
                const bool on_first = r % 2 == 0;
                for (int k = 0; k < 2; ++k) {
                    const bool is_on = (k == 0) == on_first;
                    // One thread moves ~10x as many messages per second: 10x the count keeps a
                    // run long enough to be measured.
                    const std::uint64_t count =
                        std::string(mode) == "run" ? messages : 10 * messages;
                    const Run run = run_child(is_on ? on : off, mode, size, count, batch);
                    preempted += run.preempted != 0 ? 1 : 0;
                    (is_on ? with : without).push_back(run.rate);
                    std::printf("  %-7s size %5zu run %2d %-12s %12.0f msgs/s%s\n", label(mode),
                                size, r + 1, is_on ? "counters" : "no counters", run.rate,
                                run.preempted != 0 ? " (preempted)" : "");
                }
            }
            const double m_on = median(with), m_off = median(without);
            const double b_on = *std::max_element(with.begin(), with.end());
            const double b_off = *std::max_element(without.begin(), without.end());
            std::printf(
                "%s %zu B: median with counters %.0f msgs/s, without %.0f msgs/s, ratio %.4f, "
                "cost %.2f %% (best runs: %.0f vs %.0f, cost %.2f %%; %d of %d runs "
                "preempted)\n",
                label(mode), size, m_on, m_off, m_on / m_off, (1.0 - m_on / m_off) * 100.0, b_on,
                b_off, (1.0 - b_on / b_off) * 100.0, preempted, 2 * runs);
            std::fflush(stdout);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc >= 2 && (std::string(argv[1]) == "run" || std::string(argv[1]) == "single")) {
            if (argc != 5) {
                throw std::runtime_error("usage: run|single <size> <messages> <batch>");
            }
            const std::size_t size = std::strtoul(argv[2], nullptr, 10);
            const std::uint64_t messages = std::strtoull(argv[3], nullptr, 10);
            const auto batch = static_cast<std::uint32_t>(std::strtoul(argv[4], nullptr, 10));
            if (size < 8 || messages == 0 || batch == 0) throw std::runtime_error("bad arguments");
            const double rate = std::string(argv[1]) == "run" ? run_once(size, messages, batch)
                                                              : run_single(size, messages, batch);
            std::printf("rate %.1f preempted %ld counters %d\n", rate,
                        g_preempted.load(std::memory_order::relaxed), shm::kRingCounters ? 1 : 0);
            return 0;
        }
        return compare(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
}
