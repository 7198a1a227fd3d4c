// Actor files, actor segments, stale reclaim and the liveness watcher, within one process.
// Cross-process behaviour is in tests/multiproc/actor_xproc_test.cpp.
#include "shmctx/shm/actor_file.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "namespace_guard.hpp"
#include "process.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/actor_counters.hpp"
#include "shmctx/shm/actor_segment.hpp"
#include "shmctx/shm/error_log.hpp"
#include "shmctx/shm/liveness.hpp"
#include "shmctx/shm/segment.hpp"

namespace shmctx::shm {
namespace {

using ::testing::HasSubstr;

using test::all_objects;
using test::NamespaceGuard;

/// Creates an actor file that nobody locks (a dead actor's leftover).
void create_unlocked_file(const Names& names, std::string_view name) {
    const std::string path = shm_path(names.actor_file(name));
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path;
    ::close(fd);
}

template <class Fn>
std::string layout_error_text(Fn&& fn) {
    try {
        fn();
    } catch (const LayoutError& e) {
        return e.what();
    }
    return "<no LayoutError>";
}

TEST(ActorSegment, PublishedSegmentDescribesItsCreator) {
    NamespaceGuard ns("seg-info");
    LocalActorRecord record(ns.names, "feed");
    auto seg = ActorSegment::try_open(ns.names, "feed", {0600, true});
    ASSERT_TRUE(seg.has_value());
    const ActorInfo& info = seg->info();
    EXPECT_EQ(info.uuid, record.uuid());
    EXPECT_EQ(info.pid, ::getpid());
    ASSERT_TRUE(process_start_time(::getpid()).has_value());
    EXPECT_EQ(info.start_time, *process_start_time(::getpid()));
    EXPECT_EQ(info.name, "feed");
    EXPECT_EQ(info.ns, ns.names.ns());
    EXPECT_EQ(seg->wake_table().capacity(), kActorWakeSlots);
    EXPECT_EQ(seg->counters().size(), kActorCountersBytes);
    EXPECT_EQ(seg->error_log().size(), kActorErrorLogBytes);
    // The counters table and the error log are initialised before publication: readable
    // through the peer's mapping, every counter zero, no error yet.
    std::string problem;
    const auto counters = read_actor_counters(seg->counters(), problem);
    ASSERT_TRUE(counters.has_value()) << problem;
    EXPECT_EQ(counters->known, kActorCounterSlots);
    EXPECT_TRUE(std::all_of(counters->values.begin(), counters->values.end(),
                            [](std::uint64_t v) { return v == 0; }));
    const ErrorLogSample log = read_error_log(seg->error_log());
    EXPECT_TRUE(log.valid) << log.problem;
    EXPECT_EQ(log.used, 0U);
    EXPECT_EQ(log.capacity, error_log_capacity(kActorErrorLogBytes));
    // Both mappings address the same memory: a bump through one is seen through the other.
    record.segment().links_epoch().fetch_add(5, std::memory_order::relaxed);
    EXPECT_EQ(seg->links_epoch().load(std::memory_order::relaxed), 5U);
    EXPECT_NE(static_cast<void*>(&seg->doorbell()),
              static_cast<void*>(&record.segment().doorbell()));
    // Published, and nothing is left under the temporary name.
    EXPECT_TRUE(ns.names.list("tmp").empty());
}

TEST(ActorSegment, WrongMagicIsALayoutErrorNamingBothValues) {
    NamespaceGuard ns("seg-magic");
    LocalActorRecord record(ns.names, "a");
    record.segment().raw_header().magic = 0x1122334455667788ULL;
    const std::string text =
        layout_error_text([&] { (void)ActorSegment::try_open(ns.names, "a"); });
    EXPECT_THAT(text, HasSubstr("bad magic 0x1122334455667788"));
    EXPECT_THAT(text, HasSubstr("expected 0x534158544"));
    EXPECT_THROW((void)open_peer(ns.names, "a", std::chrono::milliseconds(50)), LayoutError);
}

TEST(ActorSegment, WrongLayoutVersionIsALayoutErrorNamingBothVersions) {
    NamespaceGuard ns("seg-layout");
    LocalActorRecord record(ns.names, "a");
    record.segment().raw_header().layout_version = kLayoutVersion + 1;
    EXPECT_THAT(layout_error_text([&] { (void)ActorSegment::try_open(ns.names, "a"); }),
                HasSubstr("layout version " + std::to_string(kLayoutVersion + 1) + ", expected " +
                          std::to_string(kLayoutVersion)));
}

TEST(ActorSegment, WrongProtocolVersionIsALayoutErrorNamingBothVersions) {
    NamespaceGuard ns("seg-proto");
    LocalActorRecord record(ns.names, "a");
    record.segment().raw_header().protocol_version = 7;
    EXPECT_THAT(layout_error_text([&] { (void)ActorSegment::try_open(ns.names, "a"); }),
                HasSubstr("protocol version 7, expected " + std::to_string(kProtocolVersion)));
}

TEST(ActorSegment, BadSizesAndOffsetsAreLayoutErrors) {
    NamespaceGuard ns("seg-offsets");
    LocalActorRecord record(ns.names, "a");
    ActorHeader& h = record.segment().raw_header();
    const ActorHeader good = h;
    auto expect_rejected = [&](const char* what, const char* text) {
        SCOPED_TRACE(what);
        EXPECT_THAT(layout_error_text([&] { (void)ActorSegment::try_open(ns.names, "a"); }),
                    HasSubstr(text));
        h = good;
        EXPECT_NO_THROW((void)ActorSegment::try_open(ns.names, "a"));
    };
    h.total_bytes = good.total_bytes + 4096;
    expect_rejected("total beyond the mapping", "does not fit the mapping");
    h.header_bytes = 64;
    expect_rejected("header size", "header of 64 bytes");
    h.wake_table.offset = good.total_bytes;
    expect_rejected("wake table past the end", "wake table region");
    h.wake_table.bytes = UINT64_MAX - 8;
    expect_rejected("wake table size overflows", "wake table region");
    h.counters.offset = good.wake_table.offset;  // overlaps the wake table
    expect_rejected("counters overlap", "counters region");
    h.error_log.offset = good.error_log.offset + 1;
    expect_rejected("misaligned error log", "error log region");
    h.wake_table.bytes = sizeof(WakeSlot) + 1;
    expect_rejected("partial wake slot", "not a whole number of slots");
    std::memset(h.name, 'x', sizeof h.name);
    expect_rejected("name without NUL", "not NUL terminated");
    h.pid = -4;
    expect_rejected("pid", "invalid pid -4");
}

TEST(ActorSegment, TruncatedSegmentIsALayoutError) {
    NamespaceGuard ns("seg-short");
    Segment::create(ns.names.actor_segment("a"), 100);
    EXPECT_THROW((void)ActorSegment::try_open(ns.names, "a"), LayoutError);
}

TEST(ActorFile, NameIsTakenWithinOneProcessAndTheErrorNamesActorAndNamespace) {
    NamespaceGuard ns("taken");
    LocalActorRecord first(ns.names, "svc");
    ClaimOptions fast;
    fast.contention_wait = std::chrono::milliseconds(5);
    try {
        LocalActorRecord second(ns.names, "svc", LocalActorOptions{fast, true});
        ADD_FAILURE() << "second claim succeeded";
    } catch (const NameTaken& e) {
        EXPECT_THAT(e.what(), HasSubstr("'svc'"));
        EXPECT_THAT(e.what(), HasSubstr("'" + ns.names.ns() + "'"));
    }
    // The failed claim removed nothing of the holder's.
    EXPECT_EQ(lock_state(ns.names, "svc"), LockState::held);
    EXPECT_NO_THROW((void)open_peer(ns.names, "svc", std::chrono::seconds(1)));
}

TEST(ActorFile, LockStateProbeTellsAbsentHeldAndFree) {
    NamespaceGuard ns("probe");
    EXPECT_EQ(lock_state(ns.names, "x"), LockState::absent);
    {
        auto file = ActorFile::claim(ns.names, "x");
        EXPECT_EQ(lock_state(ns.names, "x"), LockState::held);
        // A crash-like end: the lock goes, the file stays.
    }
    EXPECT_EQ(lock_state(ns.names, "x"), LockState::free);
    auto again = ActorFile::try_claim(ns.names, "x");
    ASSERT_TRUE(again.has_value());
    again->release();
    EXPECT_EQ(lock_state(ns.names, "x"), LockState::absent);
}

TEST(ActorFile, ClaimWaitsOutACleanerHoldingAFreeName) {
    NamespaceGuard ns("cleaner");
    // The "cleaner" takes the lock of a free name, as reclaim_stale() does.
    auto cleaner = ActorFile::try_claim(ns.names, "n");
    ASSERT_TRUE(cleaner.has_value());
    std::latch started(1);
    std::optional<std::string> error;
    std::thread claimer([&] {
        started.count_down();
        try {
            ClaimOptions options;
            options.contention_wait = std::chrono::seconds(10);
            auto owned = ActorFile::claim(ns.names, "n", options);
            owned.release();
        } catch (const std::exception& e) {
            error = e.what();
        }
    });
    started.wait();
    cleaner->release();  // unlink, then drop the lock: the claimer restarts on a new file
    claimer.join();
    EXPECT_FALSE(error.has_value()) << *error;
    EXPECT_EQ(lock_state(ns.names, "n"), LockState::absent);
}

TEST(LocalActorRecord, MovedFromRecordRemovesNothing) {
    NamespaceGuard ns("move");
    std::optional<LocalActorRecord> a;
    a.emplace(ns.names, "m", LocalActorOptions{{}, false});
    {
        LocalActorRecord b(std::move(*a));
        a.reset();
        EXPECT_EQ(lock_state(ns.names, "m"), LockState::held);
        EXPECT_NO_THROW((void)open_peer(ns.names, "m", std::chrono::seconds(1)));
    }
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
}

TEST(ActorFile, CreatedWithTheRequestedModeWhateverTheUmask) {
    NamespaceGuard ns("mode");
    const mode_t old = ::umask(0077);
    ClaimOptions options;
    options.mode = 0640;
    LocalActorRecord record(ns.names, "m", LocalActorOptions{options, false});
    ::umask(old);
    struct stat st {};
    ASSERT_EQ(::stat(shm_path(ns.names.actor_file("m")).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640U);
    ASSERT_EQ(::stat(shm_path(ns.names.actor_segment("m")).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640U);
}

TEST(LocalActorRecord, ReclaimsAStaleSegmentTmpAndArenasOfItsName) {
    NamespaceGuard ns("stale");
    // A dead predecessor: unlocked actor file, a published segment, a half-built tmp and an
    // arena it owned.
    create_unlocked_file(ns.names, "w");
    const Uuid dead = Uuid::random();
    { auto seg = ActorSegment::create(ns.names, "w", dead); }
    Segment::create(ns.names.actor_segment_tmp("w", Uuid::random()), 4096);
    const Uuid peer = Uuid::random();
    Segment::create(ns.names.arena(dead, peer), 4096);
    ASSERT_EQ(all_objects(ns.names).size(), 4U);

    LocalActorRecord record(ns.names, "w", LocalActorOptions{{}, false});
    EXPECT_TRUE(ns.names.list("tmp").empty());
    EXPECT_TRUE(ns.names.list("link").empty());
    auto seg = ActorSegment::try_open(ns.names, "w");
    ASSERT_TRUE(seg.has_value());
    EXPECT_EQ(seg->info().uuid, record.uuid());
    EXPECT_NE(record.uuid(), dead);
}

TEST(LocalActorRecord, OrderlyTeardownLeavesNothing) {
    NamespaceGuard ns("teardown");
    {
        LocalActorRecord a(ns.names, "a");
        LocalActorRecord b(ns.names, "b");
        EXPECT_EQ(all_objects(ns.names).size(), 4U);
    }
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
    // The names are free again at once.
    LocalActorRecord again(ns.names, "a");
    EXPECT_EQ(lock_state(ns.names, "a"), LockState::held);
}

TEST(ReclaimStale, RemovesDeadActorsAndOrphanArenasButKeepsTheLive) {
    NamespaceGuard ns("reclaim");
    LocalActorRecord live(ns.names, "live", LocalActorOptions{{}, false});
    const Uuid other = Uuid::random();
    Segment::create(ns.names.arena(live.uuid(), other), 4096);  // owned by a live actor

    create_unlocked_file(ns.names, "dead");  // dead actor with a segment and an arena
    const Uuid dead = Uuid::random();
    { auto seg = ActorSegment::create(ns.names, "dead", dead); }
    Segment::create(ns.names.arena(dead, live.uuid()), 4096);
    Segment::create(ns.names.actor_segment_tmp("ghost", Uuid::random()), 4096);  // no file
    Segment::create(ns.names.arena(Uuid::random(), live.uuid()), 4096);          // orphan

    const auto before = all_objects(ns.names);
    const ReclaimReport dry = reclaim_stale(ns.names, true);
    EXPECT_EQ(all_objects(ns.names), before) << "a dry run removed something";
    EXPECT_EQ(dry.removed.size(), 5U) << ::testing::PrintToString(dry.removed);

    const ReclaimReport done = reclaim_stale(ns.names, false);
    auto sorted = [](std::vector<std::string> v) {
        std::sort(v.begin(), v.end());
        return v;
    };
    EXPECT_EQ(sorted(done.removed), sorted(dry.removed));
    const std::vector<std::string> expected_left = {ns.names.actor_file("live"),
                                                    ns.names.actor_segment("live"),
                                                    ns.names.arena(live.uuid(), other)};
    EXPECT_EQ(sorted(all_objects(ns.names)), sorted(expected_left));
    EXPECT_TRUE(reclaim_stale(ns.names, false).removed.empty());
}

TEST(ReclaimDeadActor, RemovesEverythingOfTheDeadActorAndNothingElse) {
    NamespaceGuard ns("reclaim-dead");
    LocalActorRecord survivor(ns.names, "survivor", LocalActorOptions{{}, false});
    Segment::create(ns.names.arena(survivor.uuid(), Uuid::random()), 4096);  // ours: kept
    create_unlocked_file(ns.names, "dead");
    const Uuid dead = Uuid::random();
    { auto seg = ActorSegment::create(ns.names, "dead", dead); }
    Segment::create(ns.names.actor_segment_tmp("dead", Uuid::random()), 4096);
    Segment::create(ns.names.arena(dead, survivor.uuid()), 4096);
    Segment::create(ns.names.arena(dead, Uuid::random()), 4096);  // to a third actor
    const auto kept = all_objects(ns.names).size() - 5;

    const ReclaimReport report = reclaim_dead_actor(ns.names, "dead", dead);
    EXPECT_EQ(report.removed.size(), 5U) << ::testing::PrintToString(report.removed);
    EXPECT_EQ(all_objects(ns.names).size(), kept);
    EXPECT_EQ(lock_state(ns.names, "dead"), LockState::absent);
    // A second survivor arriving late finds nothing, and creates no actor file.
    EXPECT_TRUE(reclaim_dead_actor(ns.names, "dead", dead).removed.empty());
    EXPECT_EQ(lock_state(ns.names, "dead"), LockState::absent);
}

TEST(ReclaimDeadActor, LeavesARestartedActorOfTheSameNameAloneButDropsTheDeadOnesArenas) {
    NamespaceGuard ns("reclaim-restart");
    const Uuid dead = Uuid::random();
    Segment::create(ns.names.arena(dead, Uuid::random()), 4096);
    LocalActorRecord restarted(ns.names, "w", LocalActorOptions{{}, false});
    const auto before = all_objects(ns.names).size();

    const ReclaimReport report = reclaim_dead_actor(ns.names, "w", dead);
    EXPECT_EQ(report.removed.size(), 1U) << ::testing::PrintToString(report.removed);
    EXPECT_EQ(all_objects(ns.names).size(), before - 1);
    EXPECT_EQ(lock_state(ns.names, "w"), LockState::held);
    auto seg = ActorSegment::try_open(ns.names, "w");
    ASSERT_TRUE(seg.has_value());
    EXPECT_EQ(seg->info().uuid, restarted.uuid());
}

TEST(ReclaimStale, KeepsArenasWhenALiveActorsSegmentIsUnreadable) {
    NamespaceGuard ns("reclaim-unknown");
    LocalActorRecord live(ns.names, "v2", LocalActorOptions{{}, false});
    live.segment().raw_header().layout_version = kLayoutVersion + 1;  // "another version"
    Segment::create(ns.names.arena(Uuid::random(), Uuid::random()), 4096);
    const ReclaimReport report = reclaim_stale(ns.names, false);
    EXPECT_TRUE(report.removed.empty());
    EXPECT_EQ(ns.names.list("link").size(), 1U);
    EXPECT_FALSE(report.notes.empty());
}

TEST(ReclaimStale, KeepsALiveCreatorsSegmentAndArenasWhenItsActorFileWasRemoved) {
    NamespaceGuard ns("reclaim-orphan");
    LocalActorRecord live(ns.names, "orphan", LocalActorOptions{{}, false});
    const std::string arena = ns.names.arena(live.uuid(), Uuid::random());
    Segment::create(arena, 4096);
    // Someone removes the live actor's file by hand: its name lock no longer protects it, but
    // its segment's creator lock (kernel evidence of a live process) still does.
    ASSERT_EQ(::unlink(shm_path(ns.names.actor_file("orphan")).c_str()), 0);

    for (const bool dry_run : {true, false}) {
        const ReclaimReport report = reclaim_stale(ns.names, dry_run);
        EXPECT_TRUE(report.removed.empty()) << dry_run << ::testing::PrintToString(report.removed);
        EXPECT_THAT(::testing::PrintToString(report.notes), HasSubstr("creator still holds"));
        const std::vector<std::string> expected = {arena, ns.names.actor_segment("orphan")};
        auto left = all_objects(ns.names);
        std::sort(left.begin(), left.end());
        EXPECT_EQ(left, expected) << "dry_run " << dry_run;
    }
    Segment::remove(arena);
}

TEST(ReclaimStale, AnUnclaimableEntryIsNotedAndTheRestIsStillSwept) {
    NamespaceGuard ns("reclaim-odd");
    // An entry under an actor-file name that cannot be opened as one (here a directory; a file
    // planted by another user in the world-writable /dev/shm fails the same way). It sorts
    // before the dead actor, whose leftovers must still go.
    const std::string odd = shm_path(ns.names.actor_file("aaa"));
    ASSERT_EQ(::mkdir(odd.c_str(), 0700), 0) << odd;
    create_unlocked_file(ns.names, "zzz");
    { auto seg = ActorSegment::create(ns.names, "zzz", Uuid::random()); }

    ReclaimReport report;
    EXPECT_NO_THROW(report = reclaim_stale(ns.names, false));
    ::rmdir(odd.c_str());
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
    EXPECT_THAT(::testing::PrintToString(report.notes), HasSubstr("aaa"));
}

TEST(OpenPeer, MissingActorIsActorNotFoundNamingActorAndNamespace) {
    NamespaceGuard ns("notfound");
    try {
        (void)open_peer(ns.names, "nobody", std::chrono::milliseconds(20));
        ADD_FAILURE() << "open_peer succeeded";
    } catch (const ActorNotFound& e) {
        EXPECT_THAT(e.what(), HasSubstr("'nobody'"));
        EXPECT_THAT(e.what(), HasSubstr("'" + ns.names.ns() + "'"));
    }
}

TEST(OpenPeer, VerifiedPeerExposesUuidPidAndPidfd) {
    NamespaceGuard ns("peer");
    LocalActorRecord record(ns.names, "p");
    PeerActor peer = open_peer(ns.names, "p", std::chrono::seconds(1));
    EXPECT_EQ(peer.uuid(), record.uuid());
    EXPECT_EQ(peer.pid(), ::getpid());
    EXPECT_GE(peer.pidfd(), 0);
    EXPECT_TRUE(lock_held(peer.lock_fd()));
    EXPECT_EQ(::fcntl(peer.pidfd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST(OpenPeer, SegmentNamingAnotherActorIsNotAPeer) {
    NamespaceGuard ns("misnamed");
    auto file = ActorFile::claim(ns.names, "t");
    auto seg = ActorSegment::create(ns.names, "t", Uuid::random());
    // Control: as published, the segment is a live peer (this process).
    EXPECT_NO_THROW((void)open_peer(ns.names, "t", std::chrono::seconds(1)));
    // The header now names another actor: a corrupt or misplaced segment, not "t".
    std::memcpy(seg.raw_header().name, "u", 2);
    try {
        (void)open_peer(ns.names, "t", std::chrono::milliseconds(20));
        ADD_FAILURE() << "open_peer accepted a segment naming another actor";
    } catch (const ActorNotFound& e) {
        EXPECT_THAT(e.what(), HasSubstr("names actor 'u'"));
    }
    Segment::remove(seg.published_name());
    file.release();
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
}

TEST(OpenPeer, SegmentWhoseCreatorLockIsFreeIsNotLiveEvenUnderAHeldName) {
    // The window between an exiting creator closing its fds and becoming a zombie: its pid and
    // start time still match and its pidfd is not yet readable, and a successor may already
    // hold the name. Here the "creator" is this (live) process, so only the segment's creator
    // lock can tell: it goes with the creator's segment fd.
    NamespaceGuard ns("creator-lock");
    auto successor = ActorFile::claim(ns.names, "s");
    { auto seg = ActorSegment::create(ns.names, "s", Uuid::random()); }  // fd closed, lock gone
    ASSERT_EQ(lock_state(ns.names, "s"), LockState::held);
    try {
        (void)open_peer(ns.names, "s", std::chrono::milliseconds(20));
        ADD_FAILURE() << "a segment whose creator let go of it was taken for a live peer";
    } catch (const ActorNotFound& e) {
        EXPECT_THAT(e.what(), HasSubstr("creator lock is free"));
    }
    // Control: the same name with a segment whose creator still holds it is live.
    Segment::remove(ns.names.actor_segment("s"));
    auto live = ActorSegment::create(ns.names, "s", Uuid::random());
    EXPECT_NO_THROW((void)open_peer(ns.names, "s", std::chrono::seconds(1)));
    Segment::remove(live.published_name());
    successor.release();
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
}

TEST(OpenPeer, PidReusedAsAThreadIdIsNotLive) {
    // pids and thread ids share one number space: a dead actor's pid can come back as a
    // thread of another process, which pidfd_open refuses with EINVAL (not ESRCH).
    NamespaceGuard ns("tid");
    std::atomic<pid_t> tid{0};
    std::atomic<bool> done{false};
    std::thread thread([&] {
        // relaxed: the id is the only datum handed over; the stop flag publishes nothing.
        tid.store(static_cast<pid_t>(::syscall(SYS_gettid)), std::memory_order::relaxed);
        while (!done.load(std::memory_order::relaxed)) std::this_thread::yield();
    });
    // relaxed: see above.
    ASSERT_TRUE(test::wait_until([&] { return tid.load(std::memory_order::relaxed) != 0; }));
    const pid_t thread_id = tid.load(std::memory_order::relaxed);  // relaxed: see above
    const auto start = process_start_time(thread_id);
    ASSERT_TRUE(start.has_value());
    {
        auto file = ActorFile::claim(ns.names, "t");  // a successor holds the name
        auto seg = ActorSegment::create(ns.names, "t", Uuid::random());
        seg.raw_header().pid = thread_id;
        seg.raw_header().start_time = *start;
        EXPECT_THROW((void)open_peer(ns.names, "t", std::chrono::milliseconds(20)), ActorNotFound);
        Segment::remove(seg.published_name());
        file.release();
    }
    done.store(true, std::memory_order::relaxed);  // relaxed: see above
    thread.join();
    EXPECT_THAT(all_objects(ns.names), ::testing::IsEmpty());
}

/// Collects watcher events; waits for them with a deadline.
class Events {
public:
    LivenessCallback callback() {
        return [this](const Uuid& u, LivenessEvent e) {
            std::lock_guard lock(mutex_);
            seen_.push_back({u, e});
        };
    }
    bool wait_for(const Uuid& u, LivenessEvent e, Deadline d = std::chrono::seconds(5)) {
        return test::wait_until([&] { return count(u, e) > 0; }, d);
    }
    std::size_t count(const Uuid& u, LivenessEvent e) {
        std::lock_guard lock(mutex_);
        return static_cast<std::size_t>(std::count_if(
            seen_.begin(), seen_.end(), [&](auto& p) { return p.first == u && p.second == e; }));
    }

private:
    std::mutex mutex_;
    std::vector<std::pair<Uuid, LivenessEvent>> seen_;
};

TEST(LivenessWatcher, BumpsItsOwnHeartbeat) {
    Heartbeat own{};
    Events events;
    LivenessOptions options;
    options.heartbeat_interval = std::chrono::milliseconds(5);
    LivenessWatcher watcher(&own, events.callback(), options);
    EXPECT_TRUE(test::wait_until([&] { return own.beats.load(std::memory_order::relaxed) >= 3; }));
    EXPECT_GT(own.last_beat_mono_ns.load(std::memory_order::relaxed), 0U);
}

TEST(LivenessWatcher, StaleHeartbeatIsUnresponsiveNeverDeadAndRecovers) {
    Heartbeat peer_beat{};
    Events events;
    LivenessOptions options;
    options.heartbeat_interval = std::chrono::milliseconds(5);
    options.unresponsive_after = std::chrono::milliseconds(40);
    LivenessWatcher watcher(nullptr, events.callback(), options);
    const int self_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
    ASSERT_GE(self_pidfd, 0);
    const Uuid peer = Uuid::random();
    watcher.watch(peer, self_pidfd, &peer_beat);
    ::close(self_pidfd);  // the watcher keeps its own duplicate
    ASSERT_TRUE(events.wait_for(peer, LivenessEvent::unresponsive));
    EXPECT_EQ(events.count(peer, LivenessEvent::dead), 0U);
    peer_beat.beats.fetch_add(1, std::memory_order::relaxed);
    ASSERT_TRUE(events.wait_for(peer, LivenessEvent::responsive));
    EXPECT_EQ(events.count(peer, LivenessEvent::unresponsive), 1U);
    EXPECT_EQ(events.count(peer, LivenessEvent::dead), 0U);
    watcher.unwatch(peer);
    EXPECT_EQ(watcher.watched(), 0U);
}

TEST(LivenessWatcher, FreeLockIsDeathEvenWhileTheProcessLives) {
    NamespaceGuard ns("lockfree");
    Events events;
    LivenessOptions options;
    options.heartbeat_interval = std::chrono::milliseconds(5);
    LivenessWatcher watcher(nullptr, events.callback(), options);
    auto record = std::make_unique<LocalActorRecord>(ns.names, "gone");
    Uuid uuid;
    {
        PeerActor peer = open_peer(ns.names, "gone", std::chrono::seconds(1));
        uuid = peer.uuid();
        watcher.watch(uuid, peer.pidfd(), &peer.segment().heartbeat(), peer.lock_fd());
        // Unwatch before the peer mapping goes away (the contract of watch()).
        record.reset();  // orderly shutdown while this process keeps running
        ASSERT_TRUE(events.wait_for(uuid, LivenessEvent::dead));
        watcher.unwatch(uuid);
    }
    EXPECT_EQ(events.count(uuid, LivenessEvent::dead), 1U);
}

TEST(LivenessWatcher, CallbackMayUnwatchAndRewatchIsReplaced) {
    Events events;
    LivenessOptions options;
    options.heartbeat_interval = std::chrono::milliseconds(5);
    std::unique_ptr<LivenessWatcher> watcher;
    std::atomic<int> calls{0};
    watcher = std::make_unique<LivenessWatcher>(
        nullptr,
        [&](const Uuid& u, LivenessEvent) {
            calls.fetch_add(1, std::memory_order::relaxed);  // relaxed: a test counter
            watcher->unwatch(u);
        },
        options);
    // An exited process: spawn one that exits at once, keep its pidfd.
    test::Child child = test::spawn("/bin/true", {});
    ASSERT_TRUE(child.wait().has_value());
    const int self_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));
    ASSERT_GE(self_pidfd, 0);
    const Uuid u = Uuid::random();
    watcher->watch(u, self_pidfd, nullptr);
    watcher->watch(u, self_pidfd, nullptr);  // replaces, does not add
    EXPECT_EQ(watcher->watched(), 1U);
    ::close(self_pidfd);
    watcher->watch(u, child.pidfd(), nullptr);  // replaced by an exited process: dead at once
    ASSERT_TRUE(test::wait_until([&] { return calls.load(std::memory_order::relaxed) >= 1; }));
    EXPECT_TRUE(test::wait_until([&] { return watcher->watched() == 0; }));
    EXPECT_EQ(calls.load(std::memory_order::relaxed), 1);
}

}  // namespace
}  // namespace shmctx::shm
