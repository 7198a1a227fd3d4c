// Death detection latency: how long after SIGKILL of a peer actor our liveness watcher reports
// it dead (DESIGN.md §2; issue bar: p50 <= 20 ms, max <= 100 ms over 100 kills).
//
//   shmctx_bench_death [kills=100] [path/to/actor_peer]
//
// Each round spawns the actor_peer helper (built with the tests, tests/actor_peer next to
// bench/), which claims an actor name and publishes its segment; we open it as a peer
// (pidfd verified against its lock), watch it, take the time, SIGKILL it and take the time again
// in the watcher's callback. Prints p50/p90/p99/max in ms. Exits 1 if a death is missed for 5 s.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "process.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/liveness.hpp"

using namespace shmctx;
using namespace std::chrono_literals;

namespace {

struct DeathLog {
    std::mutex mutex;
    Uuid watched{};
    std::optional<Clock::time_point> reported;
};

int run(std::size_t kills, const std::string& helper) {
    const shm::Names names(test::unique_ns("bench-death"));
    DeathLog log;
    shm::LocalActorRecord self(names, "bench", shm::LocalActorOptions{{}, false});
    shm::LivenessWatcher watcher(&self.segment().heartbeat(),
                                 [&](const Uuid& peer, shm::LivenessEvent e) {
                                     const auto now = Clock::now();
                                     if (e != shm::LivenessEvent::dead) return;
                                     std::lock_guard lock(log.mutex);
                                     if (peer == log.watched && !log.reported) log.reported = now;
                                 });
    std::vector<double> ms;
    ms.reserve(kills);
    int rc = 0;
    for (std::size_t i = 0; i < kills; ++i) {
        test::Child child = test::spawn(helper, {"claim", names.ns(), "victim"});
        const auto line = child.read_line(10s);
        if (!line || line->rfind("ready ", 0) != 0) {
            std::fprintf(stderr, "round %zu: helper did not start (%s)\n", i,
                         child.describe().c_str());
            rc = 1;
            break;
        }
        shm::PeerActor peer = shm::open_peer(names, "victim", 5s);
        {
            std::lock_guard lock(log.mutex);
            log.watched = peer.uuid();
            log.reported.reset();
        }
        watcher.watch(peer.uuid(), peer.pidfd(), &peer.segment().heartbeat(), peer.lock_fd());
        const auto killed_at = Clock::now();
        child.kill(SIGKILL);
        std::optional<Clock::time_point> reported;
        test::wait_until(
            [&] {
                std::lock_guard lock(log.mutex);
                reported = log.reported;
                return reported.has_value();
            },
            5s);
        watcher.unwatch(peer.uuid());
        (void)child.wait();
        if (!reported) {
            std::fprintf(stderr, "round %zu: death not reported within 5 s\n", i);
            rc = 1;
            break;
        }
        ms.push_back(std::chrono::duration<double, std::milli>(*reported - killed_at).count());
    }
    (void)shm::reclaim_stale(names, false);
    if (ms.empty()) return 1;
    std::sort(ms.begin(), ms.end());
    auto pct = [&](double p) {
        return ms[std::min(ms.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(ms.size())))];
    };
    std::printf("death_detection kills=%zu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
                ms.size(), pct(0.50), pct(0.90), pct(0.99), ms.back());
    std::printf("bar: p50 <= 20 ms %s, max <= 100 ms %s\n", pct(0.5) <= 20.0 ? "met" : "MISSED",
                ms.back() <= 100.0 ? "met" : "MISSED");
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::size_t kills = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 100;
        const std::string helper = argc > 2 ? argv[2] : test::sibling_binary("../tests/actor_peer");
        return run(kills == 0 ? 100 : kills, helper);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "shmctx_bench_death: %s\n", e.what());
        return 1;
    }
}
