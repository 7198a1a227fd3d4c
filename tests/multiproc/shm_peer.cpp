// Helper peer for the segment, wake-protocol and fault-point tests. Spawned with posix_spawn by
// the gtests; prints its observations on stdout, one per line, and exits 0 when the mode ran to
// its end (the test judges the lines). Modes:
//
//   fault <point> <hits>            hit SHMCTX_FAULT_POINT(<point>) <hits> times, printing
//                                   "before <i>" and "hit <i> corrupt=<0|1>" around each
//   armed <point>                   prints "armed=<0|1>" (shm::fault_point_armed; no hit)
//   exhaust <ns>                    private mount namespace with a 1 MiB tmpfs on /dev/shm:
//                                   create and allocate beyond it (prints "skip ..." and exits
//                                   0 when unshare/mount are not permitted)
//   pingpong <segment> <rounds> <spin_checks> <per_wait_ms>
//                                   side 1 of the wake ping-pong (wake_pingpong.hpp)
//   wake-once <segment>             wait until side 0 advertises a wait, then publish
//                                   side[1].count = 1 and wake it; SHMCTX_FAULT point
//                                   "peer.before_wake" sits between publish and wake
//   idle <segment>                  map the segment, print "ready", block reading stdin
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "private_shm.hpp"
#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/segment.hpp"
#include "shmctx/shm/wake.hpp"
#include "wake_pingpong.hpp"

namespace {

using namespace shmctx;
using namespace std::chrono_literals;

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

int usage() {
    std::fprintf(stderr, "shm_peer: bad arguments (see the file comment)\n");
    return 64;
}

int run_fault(const std::string& point, unsigned hits) {
    for (unsigned i = 1; i <= hits; ++i) {
        say("before " + std::to_string(i));
        const bool corrupt = SHMCTX_FAULT_POINT(point.c_str());
        say("hit " + std::to_string(i) + " corrupt=" + (corrupt ? "1" : "0"));
    }
    say("done");
    return 0;
}

/// Objects of namespace `ns` now in /dev/shm (of the private tmpfs in exhaust mode).
std::size_t objects_of(const shm::Names& names) {
    std::size_t n = 0;
    for (const char* kind : {"seg", "link"}) n += names.list(kind).size();
    return n;
}

int run_exhaust(const std::string& ns) {
    if (const std::string why = test::mount_private_dev_shm("1m"); !why.empty()) {
        say("skip " + why);
        return 0;
    }
    say("mounted free=" + std::to_string(shm::shm_free_bytes()));
    const shm::Names names(ns);
    constexpr std::size_t kBig = std::size_t{4} << 20;

    // 1. A fully backed create larger than the filesystem: ShmExhausted, nothing left behind.
    try {
        auto seg = shm::Segment::create(names.actor_segment("big"), kBig);
        say("create succeeded size=" + std::to_string(seg.size()));
    } catch (const ShmExhausted& e) {
        say(std::string("create ShmExhausted: ") + e.what());
    } catch (const std::exception& e) {
        say(std::string("create other: ") + e.what());
    }
    say("leftover " + std::to_string(objects_of(names)));

    // 2. A sparse create of the same size succeeds (nothing is backed yet); a small allocate()
    //    is usable, an allocate() beyond the room is ShmExhausted, and the backed part stays
    //    usable. A SIGBUS anywhere here ends the process by signal: the test sees it.
    try {
        auto seg =
            shm::Segment::create(names.actor_segment("sparse"), kBig, {}, shm::Backing::sparse);
        say("sparse created size=" + std::to_string(seg.size()));
        constexpr std::size_t kSmall = 256 * 1024;
        seg.allocate(0, kSmall);
        std::memset(seg.data(), 0xA5, kSmall);
        say("allocate small ok");
        try {
            seg.allocate(kSmall, kBig - kSmall);
            say("allocate big succeeded");
        } catch (const ShmExhausted& e) {
            say(std::string("allocate ShmExhausted: ") + e.what());
        }
        std::memset(seg.data(), 0x5A, kSmall);
        say(std::string("touch ok ") +
            (static_cast<unsigned char>(seg.data()[kSmall - 1]) == 0x5A ? "1" : "0"));
        shm::Segment::remove(seg.name());
    } catch (const std::exception& e) {
        say(std::string("sparse other: ") + e.what());
    }
    say("leftover " + std::to_string(objects_of(names)));
    say("done");
    return 0;
}

struct Mapped {
    shm::Segment segment;
    test::PingPongBlock* block;
    shm::WakeTable table;
};

Mapped map_block(const std::string& name) {
    auto segment = shm::Segment::open(name, {}, sizeof(test::PingPongBlock));
    auto* block = test::pingpong_block(segment.data(), /*create=*/false);
    const auto table = test::pingpong_table(block);
    return Mapped{std::move(segment), block, table};
}

int run_pingpong(const std::string& name, std::uint64_t rounds, std::uint32_t spin_checks,
                 long per_wait_ms) {
    auto m = map_block(name);
    say("ready");
    const shm::WaitPolicy policy{shm::WaitMode::block, spin_checks};
    const auto r = test::run_pingpong(*m.block, m.table, 1, rounds, policy,
                                      std::chrono::milliseconds(per_wait_ms));
    if (!r.ok) {
        say("failed round=" + std::to_string(r.failed_round) +
            " status=" + test::to_string(r.failed_status) +
            " peer_count=" + std::to_string(m.block->side[0].count.load()));
        return 3;
    }
    say("done rounds=" + std::to_string(rounds) + " ns=" + std::to_string(r.elapsed.count()) +
        " woken=" + std::to_string(r.woken));
    return 0;
}

int run_wake_once(const std::string& name) {
    auto m = map_block(name);
    say("ready");
    // Publish only once side 0 is in its blocking phase, so that the wake must cross processes
    // through the futex rather than be caught by side 0's spin.
    const bool advertised = test::wait_until(
        [&] {
            // relaxed: a test observation; the protocol's ordering is wake_cell's business.
            return m.block->side[0].cell.waiter.load(std::memory_order::relaxed) != 0;
        },
        Deadline(10s));
    if (!advertised) {
        say("side 0 never advertised");
        return 3;
    }
    // [pingpong.publish] pairs with [pingpong.observe] in the test's predicate.
    m.block->side[1].count.store(1, std::memory_order::release);
    say("published");
    (void)SHMCTX_FAULT_POINT("peer.before_wake");
    const auto result = shm::wake_cell(m.block->side[0].cell, m.table);
    say(std::string("wake ") + (result == shm::WakeResult::woken ? "woken" : "not-woken"));
    return 0;
}

int run_idle(const std::string& name) {
    auto m = map_block(name);
    say("ready");
    char c = 0;
    for (;;) {  // until the test closes our stdin or kills us
        const ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n == 0 || (n < 0 && errno != EINTR)) return 0;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) return usage();
    try {
        const std::string& mode = args[0];
        if (mode == "fault" && args.size() == 3) {
            return run_fault(args[1], static_cast<unsigned>(std::stoul(args[2])));
        }
        if (mode == "armed" && args.size() == 2) {
            say(std::string("armed=") + (shm::fault_point_armed(args[1].c_str()) ? "1" : "0"));
            return 0;
        }
        if (mode == "exhaust" && args.size() == 2) return run_exhaust(args[1]);
        if (mode == "pingpong" && args.size() == 5) {
            return run_pingpong(args[1], std::stoull(args[2]),
                                static_cast<std::uint32_t>(std::stoul(args[3])),
                                std::stol(args[4]));
        }
        if (mode == "wake-once" && args.size() == 2) return run_wake_once(args[1]);
        if (mode == "idle" && args.size() == 2) return run_idle(args[1]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shm_peer %s: %s\n", args[0].c_str(), e.what());
        return 2;
    }
    return usage();
}
