// tick_stream: a market-data feed process streams FlatBuffers ticks through a shmctx ring in
// shared memory to a consumer process it spawns, using only the shared-memory and wire layers
// (the actor runtime builds contexts and streams on exactly these pieces):
//
//   feed                                            consumer (spawned with posix_spawn)
//   claim actor "feed" (OFD-locked actor file)       claim actor "consumer", print "ready"
//   open_peer("consumer"): pidfd verified by lock
//   arena link.<feed>.<consumer>, carve a ring,
//   RingWriter over it; send the carve descriptor ─► open_peer("feed"), ArenaView::attach,
//                                                    RingReader over the same bytes
//   build Tick, try_write; when full, block in      drain records zero-copy, verify each Tick
//   wait_writable (futex wake protocol)             (FlatBuffers verifier, file identifier,
//                                                    sequence); block in wait_readable when dry
//   close the ring when done                    ─►  print the count, detach, exit 0
//
// Usage: tick_stream [--count N] [--ns NAMESPACE] [--mode block|spin]
// Thread-safety: single-threaded program (one thread per process).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmctx/example_tick_generated.h"
#include "shmctx/payload.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/wake.hpp"
#include "shmctx/spawner.hpp"

SHMCTX_ROOT_TYPE(shmctx::examples::Tick, "TICK");

namespace {

using namespace std::chrono_literals;
using shmctx::examples::Tick;
namespace shm = shmctx::shm;

constexpr std::uint16_t kTickKind = 1;
constexpr std::size_t kRingDataBytes = std::size_t{1} << 20;  // 1 MiB of records
constexpr std::uint32_t kRingCapacityMsgs = 4096;

struct Args {
    std::uint64_t count = 5'000'000;
    std::string ns;
    shm::WaitMode mode = shm::WaitMode::block;
    bool consumer = false;
};

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", argv[i]);
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--count") {
            a.count = std::strtoull(next().c_str(), nullptr, 10);
        } else if (arg == "--ns") {
            a.ns = next();
        } else if (arg == "--mode") {
            a.mode = next() == "spin" ? shm::WaitMode::busy_spin : shm::WaitMode::block;
        } else if (arg == "--consumer") {
            a.consumer = true;
        } else {
            std::fprintf(stderr, "usage: tick_stream [--count N] [--ns NS] [--mode block|spin]\n");
            std::exit(2);
        }
    }
    if (a.ns.empty()) a.ns = "example-" + std::to_string(::getpid());
    return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now().time_since_epoch())
                                          .count());
}

/// One wake slot of our own actor segment, for the blocking waits.
struct OwnWaiter {
    explicit OwnWaiter(const shm::LocalActorRecord& self)
        : slots(self.segment().wake_table().capacity()),
          index(slots.allocate().value()),
          waiter(self.segment().wake_table(), index) {}
    shm::WakeSlotAllocator slots;
    std::uint32_t index;
    shm::Waiter waiter;
};

/// One line from `fd` (without the newline), or nullopt at EOF or the deadline.
std::optional<std::string> read_line(int fd, shmctx::Deadline deadline) {
    std::string line;
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining());
        const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return std::nullopt;
        char c = 0;
        const ssize_t n = ::read(fd, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return std::nullopt;
        if (c == '\n') return line;
        line.push_back(c);
    }
}

int run_consumer(const Args& args) {
    shmctx::child_process_init();
    const shm::Names names(args.ns);
    shm::LocalActorRecord self(names, "consumer");
    std::printf("ready\n");
    std::fflush(stdout);

    const auto line = read_line(STDIN_FILENO, shmctx::Deadline(10s));
    shm::CarveDescriptor ring{};
    if (!line || std::sscanf(line->c_str(), "ring %" SCNu64 " %" SCNu64 " %" SCNu64, &ring.offset,
                             &ring.bytes, &ring.generation) != 3) {
        std::fprintf(stderr, "consumer: no ring descriptor from the feed\n");
        return 1;
    }
    shm::PeerActor feed = shm::open_peer(names, "feed", shmctx::Deadline(5s));
    const shm::ArenaView arena = shm::ArenaView::open(names, feed.uuid(), self.uuid());
    shm::RingReader reader =
        shm::RingReader::attach(arena.attach(ring), ring.generation, feed.segment().wake_table());
    reader.set_capacity_msgs(kRingCapacityMsgs);
    OwnWaiter own(self);

    std::uint64_t expected = 0;
    double bid_sum = 0;
    for (;;) {
        const auto drained = reader.drain(
            [&](const shm::RecordView& record) {
                const Tick* tick = shmctx::verified_root<Tick>(record.payload);
                if (tick->seq() != expected) {
                    std::fprintf(stderr,
                                 "consumer: tick %" PRIu64 " arrived, expected %" PRIu64 "\n",
                                 tick->seq(), expected);
                    std::exit(1);
                }
                bid_sum += tick->bid();
                ++expected;
            },
            256);
        if (drained.status == shm::ReadResult::protocol_error) {
            std::fprintf(stderr, "consumer: protocol error: %.*s\n",
                         static_cast<int>(reader.error_text().size()), reader.error_text().data());
            return 1;
        }
        if (drained.count > 0) continue;
        if (reader.producer_closed()) {
            // The close is published after the last record; one more look catches a race.
            if (reader.drain([](const shm::RecordView&) {}, 1).count == 0) break;
            std::fprintf(stderr, "consumer: record after close\n");
            return 1;
        }
        // Bounded waits, so a feed that dies is noticed (its lock is the kernel's evidence).
        const auto status = reader.wait_readable(own.waiter, shmctx::Deadline(100ms), {},
                                                 shm::WaitPolicy{args.mode, 2000});
        if (status == shm::WaitStatus::timed_out && !shm::lock_held(feed.lock_fd())) {
            std::fprintf(stderr, "consumer: the feed died after %" PRIu64 " ticks\n", expected);
            return 1;
        }
    }
    arena.detach(ring);
    std::printf("consumer: received %" PRIu64 " ticks in order (bid checksum %.1f)\n", expected,
                bid_sum);
    return 0;
}

int run_feed(const Args& args, const char* self_exe) {
    const shm::Names names(args.ns);
    shm::LocalActorRecord self(names, "feed");

    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
        std::perror("pipe2");
        return 1;
    }
    shmctx::Spawner spawner;
    shmctx::SpawnOptions options;
    options.stdin_fd = to_child[0];
    options.stdout_fd = from_child[1];
    const std::string mode = args.mode == shm::WaitMode::busy_spin ? "spin" : "block";
    shmctx::ChildProcess child =
        spawner.spawn(self_exe, {"--consumer", "--ns", args.ns, "--mode", mode}, {}, options);
    ::close(to_child[0]);
    ::close(from_child[1]);

    if (read_line(from_child[0], shmctx::Deadline(10s)) != "ready") {
        std::fprintf(
            stderr, "feed: the consumer did not start (%s)\n",
            child.wait(shmctx::Deadline(1s)) ? child.status()->describe().c_str() : "running");
        return 1;
    }
    shm::PeerActor consumer = shm::open_peer(names, "consumer", shmctx::Deadline(5s));
    shm::Arena arena = shm::Arena::create(names, self.uuid(), consumer.uuid());
    const shm::Carve carve = arena.carve(shm::ring_region_bytes(kRingDataBytes));
    shm::RingParams params;
    params.data_bytes = kRingDataBytes;
    params.generation = carve.descriptor.generation;
    params.capacity_msgs = kRingCapacityMsgs;
    shm::RingWriter writer =
        shm::RingWriter::create(carve.body, params, consumer.segment().wake_table());
    const std::string descriptor = "ring " + std::to_string(carve.descriptor.offset) + " " +
                                   std::to_string(carve.descriptor.bytes) + " " +
                                   std::to_string(carve.descriptor.generation) + "\n";
    if (::write(to_child[1], descriptor.data(), descriptor.size()) !=
        static_cast<ssize_t>(descriptor.size())) {
        std::perror("feed: write");
        return 1;
    }

    OwnWaiter own(self);
    flatbuffers::FlatBufferBuilder fbb(256);
    const auto t0 = std::chrono::steady_clock::now();
    auto last_report = t0;
    std::uint64_t full_waits = 0;
    for (std::uint64_t seq = 0; seq < args.count; ++seq) {
        fbb.Clear();
        const double mid = 100.0 + static_cast<double>(seq % 1000) * 0.01;
        fbb.Finish(shmctx::examples::CreateTick(fbb, seq, static_cast<std::uint32_t>(seq % 64),
                                                mid - 0.005, mid + 0.005, 100, 200, now_ns()),
                   "TICK");
        const shmctx::PayloadView tick(fbb);
        for (;;) {
            const auto r = writer.try_write(kTickKind, tick.bytes());
            if (r == shm::WriteResult::ok) break;
            if (r != shm::WriteResult::full_msgs && r != shm::WriteResult::full_bytes) {
                std::fprintf(stderr, "feed: write failed: %.*s\n",
                             static_cast<int>(shm::to_string(r).size()), shm::to_string(r).data());
                return 1;
            }
            ++full_waits;
            if (writer.wait_writable(tick.size_bytes(), own.waiter, shmctx::Deadline(5s), {},
                                     shm::WaitPolicy{args.mode, 2000}) ==
                shm::WaitStatus::timed_out) {
                std::fprintf(stderr, "feed: the consumer stopped reading\n");
                return 1;
            }
        }
        if ((seq & 0xFFF) == 0 && std::chrono::steady_clock::now() - last_report > 250ms) {
            last_report = std::chrono::steady_clock::now();
            std::fprintf(stderr,
                         "\rfeed: %10" PRIu64 " ticks  %6.2f M/s  ring %4" PRIu64 "/%u msgs", seq,
                         static_cast<double>(seq) / seconds_since(t0) / 1e6, writer.size_approx(),
                         writer.capacity_msgs());
        }
    }
    writer.close();
    const double elapsed = seconds_since(t0);
    // The consumer's verdict comes through its stdout; pass it on.
    const auto verdict = read_line(from_child[0], shmctx::Deadline(30s));
    const auto status = child.wait(shmctx::Deadline(30s));
    std::fprintf(stderr, "\r%70s\r", "");
    if (verdict) std::printf("%s\n", verdict->c_str());
    std::printf("feed: sent %" PRIu64 " ticks of %zu bytes in %.3f s: %.2f M ticks/s, %" PRIu64
                " waits for space\n",
                args.count, static_cast<std::size_t>(fbb.GetSize()), elapsed,
                static_cast<double>(args.count) / elapsed / 1e6, full_waits);
    if (!status || !status->success()) {
        std::fprintf(stderr, "feed: consumer %s\n",
                     status ? status->describe().c_str() : "did not finish");
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Args args = parse(argc, argv);
    try {
        if (args.consumer) return run_consumer(args);
        return run_feed(args, "/proc/self/exe");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", args.consumer ? "consumer" : "feed", e.what());
        return 1;
    }
}
