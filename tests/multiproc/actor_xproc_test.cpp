// Actor names and liveness across real processes (helper: actor_peer.cpp, posix_spawn'ed):
// claim races, SIGKILL of a holder, half-built actors, pid reuse, death detection latency.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_file.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/liveness.hpp"
#include "shmctx/shm/segment.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;
using ::testing::IsEmpty;

using test::all_objects;
using test::NamespaceGuard;

test::Child spawn_claimer(const Names& names, const std::string& name, bool gate = false,
                          const std::vector<std::string>& env = {}) {
    std::vector<std::string> args{"claim", names.ns(), name};
    if (gate) args.emplace_back("gate");
    return test::spawn("actor_peer", args, env);
}

/// Reads the "ready <uuid> <pid>" line; nullopt (with the line in `seen`) otherwise.
std::optional<Uuid> read_ready(test::Child& child, std::string* seen = nullptr) {
    const auto line = child.read_line();
    if (seen != nullptr) *seen = line.value_or("<eof>");
    if (!line || line->rfind("ready ", 0) != 0) return std::nullopt;
    std::istringstream in(line->substr(6));
    std::string hex;
    in >> hex;
    Uuid u;
    if (!Uuid::parse_hex(hex, u)) return std::nullopt;
    return u;
}

/// Kills and reaps a child.
void kill_and_reap(test::Child& child) {
    child.kill(SIGKILL);
    ASSERT_TRUE(child.wait().has_value()) << child.describe();
}

TEST(ActorXproc, ExactlyOneOfManyConcurrentClaimersWins) {
    const std::size_t rounds = test::scaled(5, 2);
    constexpr int kClaimers = 4;
    for (std::size_t round = 0; round < rounds; ++round) {
        NamespaceGuard ns("race");
        std::vector<test::Child> children;
        for (int i = 0; i < kClaimers; ++i)
            children.push_back(spawn_claimer(ns.names, "one", true));
        for (auto& c : children) c.write("go\n");  // start gate: all claim at about once
        int ready = 0;
        int taken = 0;
        test::Child* winner = nullptr;
        for (auto& c : children) {
            const auto line = c.read_line();
            ASSERT_TRUE(line.has_value()) << "no answer; helper " << c.describe();
            if (line->rfind("ready ", 0) == 0) {
                ++ready;
                winner = &c;
            } else if (*line == "taken") {
                ++taken;
            } else {
                ADD_FAILURE() << "unexpected line '" << *line << "'";
            }
        }
        EXPECT_EQ(ready, 1) << "round " << round;
        EXPECT_EQ(taken, kClaimers - 1) << "round " << round;
        ASSERT_NE(winner, nullptr);
        EXPECT_EQ(lock_state(ns.names, "one"), LockState::held);
        winner->write("quit\n");
        for (auto& c : children) {
            const auto status = c.wait();
            ASSERT_TRUE(status.has_value()) << c.describe();
            EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << c.describe();
        }
        EXPECT_THAT(all_objects(ns.names), IsEmpty()) << "the winner's teardown left objects";
    }
}

TEST(ActorXproc, SigkillOfTheHolderFreesTheNameAtOnce) {
    NamespaceGuard ns("kill-holder");
    test::Child holder = spawn_claimer(ns.names, "svc");
    std::string seen;
    const auto old_uuid = read_ready(holder, &seen);
    ASSERT_TRUE(old_uuid.has_value()) << seen << "; helper " << holder.describe();
    EXPECT_EQ(lock_state(ns.names, "svc"), LockState::held);
    kill_and_reap(holder);

    EXPECT_EQ(lock_state(ns.names, "svc"), LockState::free);
    EXPECT_THROW((void)open_peer(ns.names, "svc", 20ms), ActorNotFound);
    LocalActorOptions no_wait;
    no_wait.claim.contention_wait = Duration::zero();  // "at once": no retry allowed
    no_wait.reclaim_namespace = false;
    {
        LocalActorRecord record(ns.names, "svc", no_wait);
        EXPECT_NE(record.uuid(), *old_uuid);
        PeerActor peer = open_peer(ns.names, "svc", 1s);
        EXPECT_EQ(peer.uuid(), record.uuid()) << "the dead holder's segment was not replaced";
        EXPECT_EQ(peer.pid(), ::getpid());
    }
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

TEST(ActorXproc, SweepRacingANewClaimerNeverTakesItsNameOrItsSegment) {
    const std::size_t rounds = test::scaled(20, 3);
    NamespaceGuard ns("sweep-race");
    for (std::size_t round = 0; round < rounds; ++round) {
        test::Child dead = spawn_claimer(ns.names, "r");
        ASSERT_TRUE(read_ready(dead).has_value()) << "round " << round << ": " << dead.describe();
        kill_and_reap(dead);  // leaves a free actor file and a stale segment
        test::Child claimer = spawn_claimer(ns.names, "r", true);
        // Sweep without pause while it claims: each sweep takes the free name's lock for a
        // moment, so the claimer meets a held lock on the file it opened.
        std::atomic<bool> answered{false};
        std::thread sweeper([&] {
            // relaxed: a stop flag; the sweep publishes nothing through it.
            while (!answered.load(std::memory_order::relaxed)) {
                (void)reclaim_stale(ns.names, false);
            }
        });
        claimer.write("go\n");
        std::string seen;
        const auto uuid = read_ready(claimer, &seen);
        answered.store(true, std::memory_order::relaxed);  // relaxed: see above
        sweeper.join();
        ASSERT_TRUE(uuid.has_value())
            << "round " << round << ": '" << seen << "'; helper " << claimer.describe();
        (void)reclaim_stale(ns.names, false);
        PeerActor peer = open_peer(ns.names, "r", 1s);
        EXPECT_EQ(peer.uuid(), *uuid) << "round " << round;
        claimer.write("quit\n");
        ASSERT_TRUE(claimer.wait().has_value()) << claimer.describe();
    }
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

TEST(ActorXproc, HalfBuiltActorIsInvisibleAndItsTmpIsReclaimedAfterDeath) {
    NamespaceGuard ns("half-built");
    ASSERT_TRUE(fault_points_enabled()) << "this test needs -DSHMCTX_FAULT_POINTS=ON";
    test::Child stalled =
        spawn_claimer(ns.names, "slow", false, {"SHMCTX_FAULT=actor.before_publish=stall"});
    ASSERT_TRUE(test::wait_until([&] { return !ns.names.list("tmp").empty(); }))
        << "no tmp segment appeared; helper " << stalled.describe();
    EXPECT_EQ(lock_state(ns.names, "slow"), LockState::held);
    EXPECT_TRUE(ns.names.list("seg").empty());
    EXPECT_THROW((void)open_peer(ns.names, "slow", 100ms), ActorNotFound);
    // Alive: a sweep must leave it alone.
    EXPECT_THAT(reclaim_stale(ns.names, false).removed, IsEmpty());
    EXPECT_EQ(ns.names.list("tmp").size(), 1U);

    const std::string tmp = ns.names.prefix() + "tmp." + ns.names.list("tmp").front();
    kill_and_reap(stalled);
    const ReclaimReport report = reclaim_stale(ns.names, false);
    EXPECT_THAT(report.removed, ::testing::UnorderedElementsAre(tmp, ns.names.actor_file("slow")));
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

TEST(ActorXproc, PeerOfAnotherLayoutVersionIsALayoutErrorNamingBothVersions) {
    NamespaceGuard ns("version");
    ASSERT_TRUE(fault_points_enabled()) << "this test needs -DSHMCTX_FAULT_POINTS=ON";
    test::Child other =
        spawn_claimer(ns.names, "v2", false, {"SHMCTX_FAULT=actor.before_publish=corrupt"});
    std::string seen;
    ASSERT_TRUE(read_ready(other, &seen).has_value()) << seen << "; helper " << other.describe();
    try {
        (void)open_peer(ns.names, "v2", 1s);
        ADD_FAILURE() << "a segment of another layout version was accepted";
    } catch (const LayoutError& e) {
        EXPECT_THAT(e.what(),
                    ::testing::HasSubstr("layout version " + std::to_string(kLayoutVersion + 1) +
                                         ", expected " + std::to_string(kLayoutVersion)));
    }
    other.write("quit\n");
    const auto status = other.wait();
    ASSERT_TRUE(status.has_value()) << other.describe();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << other.describe();
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

TEST(ActorXproc, PidReuseIsNeverMistakenForLiveness) {
    NamespaceGuard ns("pid-reuse");
    test::Child sleeper = test::spawn("actor_peer", {"sleep"});
    ASSERT_TRUE(sleeper.read_line().has_value()) << sleeper.describe();
    const auto sleeper_start = process_start_time(sleeper.pid());
    ASSERT_TRUE(sleeper_start.has_value());

    // (a) A published segment naming a live, unrelated process with its true start time, but
    //     nobody holds the name's lock: dead.
    {
        std::optional<ActorFile> file = ActorFile::claim(ns.names, "a");
        auto seg = ActorSegment::create(ns.names, "a", Uuid::random());
        seg.raw_header().pid = sleeper.pid();
        seg.raw_header().start_time = *sleeper_start;
        EXPECT_NO_THROW((void)open_peer(ns.names, "a", 1s)) << "control: lock held -> live";
        file.reset();  // the lock goes as at a crash; the file and segment stay
        EXPECT_EQ(lock_state(ns.names, "a"), LockState::free);
        EXPECT_THROW((void)open_peer(ns.names, "a", 50ms), ActorNotFound);
    }
    // (b) The lock is held and the pid is alive, but its start time is not the header's: the
    //     pid was reused by another process.
    {
        auto file = ActorFile::claim(ns.names, "c");
        auto seg = ActorSegment::create(ns.names, "c", Uuid::random());
        seg.raw_header().pid = sleeper.pid();
        seg.raw_header().start_time = *sleeper_start + 1;
        try {
            (void)open_peer(ns.names, "c", 50ms);
            ADD_FAILURE() << "a reused pid was taken for the actor";
        } catch (const ActorNotFound& e) {
            EXPECT_THAT(e.what(), ::testing::HasSubstr("start time"));
        }
        seg.raw_header().start_time = *sleeper_start;
        EXPECT_NO_THROW((void)open_peer(ns.names, "c", 1s)) << "control: true start time";
        // (c) The pid of a process that has exited and been reaped.
        test::Child gone = test::spawn("/bin/true", {});
        ASSERT_TRUE(gone.wait().has_value());
        seg.raw_header().pid = gone.pid();
        EXPECT_THROW((void)open_peer(ns.names, "c", 50ms), ActorNotFound);
        Segment::remove(seg.published_name());
        file.release();
    }
    (void)reclaim_stale(ns.names, false);
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

TEST(ActorXproc, UnreapedDeadCreatorIsNotLiveWhileASuccessorHoldsTheName) {
    NamespaceGuard ns("zombie");
    test::Child dead = spawn_claimer(ns.names, "z");
    std::string seen;
    ASSERT_TRUE(read_ready(dead, &seen).has_value()) << seen << "; helper " << dead.describe();
    // Killed but not reaped: its pid and start time still match its header. The kernel drops
    // its locks (closes its fds) before the process becomes a zombie, so for a while it is
    // neither running user code nor visible as exited through its pidfd (the window a CI run
    // once hit). Wait only for the locks: the verdict must not depend on the zombie state.
    auto old_segment = ActorSegment::try_open(ns.names, "z");
    ASSERT_TRUE(old_segment.has_value());
    dead.kill(SIGKILL);
    ASSERT_TRUE(test::wait_until([&] {
        return lock_state(ns.names, "z") == LockState::free &&
               !old_segment->segment().locked_elsewhere();
    })) << dead.describe();
    // A successor has claimed the name but not yet replaced the dead one's segment.
    std::optional<ActorFile> successor = ActorFile::claim(ns.names, "z");
    EXPECT_THROW((void)open_peer(ns.names, "z", 50ms), ActorNotFound)
        << "the segment of an exited process was verified as live";
    const auto status = dead.wait();
    ASSERT_TRUE(status.has_value()) << dead.describe();
    successor.reset();
    (void)reclaim_stale(ns.names, false);
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

/// Records when each liveness event arrived.
class EventLog {
public:
    LivenessCallback callback() {
        return [this](const Uuid& u, LivenessEvent e) {
            const auto now = Clock::now();
            std::lock_guard lock(mutex_);
            events_.push_back({u, e, now});
        };
    }
    std::optional<Clock::time_point> first(const Uuid& u, LivenessEvent e) {
        std::lock_guard lock(mutex_);
        for (auto& r : events_) {
            if (r.peer == u && r.event == e) return r.at;
        }
        return std::nullopt;
    }
    std::size_t count(const Uuid& u, LivenessEvent e) {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(std::count_if(
            events_.begin(), events_.end(), [&](auto& r) { return r.peer == u && r.event == e; }));
    }

private:
    struct Record {
        Uuid peer;
        LivenessEvent event;
        Clock::time_point at;
    };
    std::mutex mutex_;
    std::vector<Record> events_;
};

TEST(ActorXproc, DeathOfAKilledPeerIsReportedWithinFiveSeconds) {
    NamespaceGuard ns("death");
    EventLog log;
    LocalActorRecord self(ns.names, "watcher", LocalActorOptions{{}, false});
    LivenessWatcher watcher(&self.segment().heartbeat(), log.callback());
    const std::size_t kills = test::scaled(100, 5);
    std::vector<double> latency_ms;
    for (std::size_t i = 0; i < kills; ++i) {
        test::Child peer_proc = spawn_claimer(ns.names, "peer");  // reclaims the last one's
        std::string seen;
        ASSERT_TRUE(read_ready(peer_proc, &seen).has_value())
            << "kill " << i << ": " << seen << "; helper " << peer_proc.describe();
        PeerActor peer = open_peer(ns.names, "peer", 5s);
        watcher.watch(peer.uuid(), peer.pidfd(), &peer.segment().heartbeat(), peer.lock_fd());
        const auto killed_at = Clock::now();
        peer_proc.kill(SIGKILL);
        ASSERT_TRUE(
            test::wait_until([&] { return log.first(peer.uuid(), LivenessEvent::dead); }, 5s))
            << "kill " << i << ": death not reported within 5 s; helper " << peer_proc.describe();
        const auto reported_at = *log.first(peer.uuid(), LivenessEvent::dead);
        latency_ms.push_back(
            std::chrono::duration<double, std::milli>(reported_at - killed_at).count());
        watcher.unwatch(peer.uuid());
        EXPECT_EQ(log.count(peer.uuid(), LivenessEvent::dead), 1U);
        ASSERT_TRUE(peer_proc.wait().has_value()) << peer_proc.describe();
    }
    std::sort(latency_ms.begin(), latency_ms.end());
    auto pct = [&](double p) {
        return latency_ms[std::min(
            latency_ms.size() - 1,
            static_cast<std::size_t>(p * static_cast<double>(latency_ms.size())))];
    };
    std::printf("death detection over %zu kills: p50 %.3f ms, p90 %.3f ms, max %.3f ms\n",
                latency_ms.size(), pct(0.5), pct(0.9), latency_ms.back());
    EXPECT_LE(latency_ms.back(), 5000.0);
    (void)reclaim_stale(ns.names, false);
    EXPECT_EQ(all_objects(ns.names).size(), 2U) << "only our own actor file and segment remain";
}

TEST(ActorXproc, StoppedPeerIsUnresponsiveNeverDeadAndRecovers) {
    NamespaceGuard ns("sigstop");
    EventLog log;
    LivenessOptions options;
    options.heartbeat_interval = 10ms;
    options.unresponsive_after = 300ms;
    options.stalled_after = 600ms;
    LivenessWatcher watcher(nullptr, log.callback(), options);
    test::Child peer_proc = spawn_claimer(ns.names, "sleepy");
    std::string seen;
    ASSERT_TRUE(read_ready(peer_proc, &seen).has_value()) << seen << "; " << peer_proc.describe();
    PeerActor peer = open_peer(ns.names, "sleepy", 5s);
    watcher.watch(peer.uuid(), peer.pidfd(), &peer.segment().heartbeat(), peer.lock_fd());
    peer_proc.kill(SIGSTOP);
    EXPECT_TRUE(test::wait_until(
        [&] { return log.first(peer.uuid(), LivenessEvent::unresponsive).has_value(); }, 5s));
    // stalled_after: reported once, after unresponsive, at least that long after the stop.
    EXPECT_TRUE(test::wait_until(
        [&] { return log.first(peer.uuid(), LivenessEvent::stalled).has_value(); }, 5s));
    EXPECT_GE(*log.first(peer.uuid(), LivenessEvent::stalled),
              *log.first(peer.uuid(), LivenessEvent::unresponsive));
    EXPECT_EQ(log.count(peer.uuid(), LivenessEvent::dead), 0U);
    peer_proc.kill(SIGCONT);
    EXPECT_TRUE(test::wait_until(
        [&] { return log.first(peer.uuid(), LivenessEvent::responsive).has_value(); }, 5s));
    EXPECT_EQ(log.count(peer.uuid(), LivenessEvent::dead), 0U);
    EXPECT_EQ(log.count(peer.uuid(), LivenessEvent::stalled), 1U);
    peer_proc.write("quit\n");
    const auto status = peer_proc.wait();
    ASSERT_TRUE(status.has_value()) << peer_proc.describe();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << peer_proc.describe();
    // Its orderly exit dropped the lock while we still watch: that is death on kernel evidence.
    EXPECT_TRUE(test::wait_until(
        [&] { return log.first(peer.uuid(), LivenessEvent::dead).has_value(); }, 5s));
    watcher.unwatch(peer.uuid());
    EXPECT_THAT(all_objects(ns.names), IsEmpty());
}

}  // namespace
}  // namespace shmctx::shm
