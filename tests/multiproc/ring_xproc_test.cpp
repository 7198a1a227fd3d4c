// The ring across two real processes: ring_peer (spawned with posix_spawn) owns the arena and
// produces; this process attaches through an ArenaView and consumes.
//
// Scale: Streams.* move scaled(10'000'000) records per wait mode; SHMCTX_TEST_SCALE lowers it
// (the sanitizer suites in CI run with a small scale).
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "process.hpp"
#include "ring_records.hpp"
#include "shmctx/errors.hpp"
#include "shmctx/shm/arena.hpp"
#include "shmctx/shm/fault.hpp"
#include "shmctx/shm/names.hpp"
#include "shmctx/shm/ring.hpp"
#include "shmctx/shm/segment.hpp"

namespace shmctx::shm {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kMaxRecord = 4096;

const char* mode_name(WaitMode m) {
    switch (m) {
        case WaitMode::busy_spin:
            return "busy_spin";
        case WaitMode::spin_yield:
            return "spin_yield";
        case WaitMode::block:
            return "block";
    }
    return "?";
}

/// One producer peer and our consumer side of its ring. Removes every object it named.
class PeerRing {
public:
    PeerRing(const std::string& action, std::uint64_t count, WaitMode mode, std::uint64_t batch,
             const std::vector<std::string>& env = {})
        : names_(test::unique_ns("ring-xproc")),
          owner_(Uuid::random()),
          peer_(Uuid::random()),
          arena_name_(names_.arena(owner_, peer_)),
          wakes_name_(names_.prefix() + "wakes"),
          wakes_(Segment::create(wakes_name_, 4096)),
          table_({wakes_.data(), wakes_.size()}) {
        child_ = test::spawn("ring_peer",
                             {action, arena_name_, owner_.to_hex(), peer_.to_hex(), wakes_name_,
                              std::to_string(count), mode_name(mode), std::to_string(batch)},
                             env);
        const auto line = child_.read_line(Deadline(20s));
        if (!line) throw std::runtime_error("peer did not get ready: " + child_.describe());
        std::istringstream in(*line);
        std::string word;
        in >> word >> descriptor_.offset >> descriptor_.bytes >> descriptor_.generation;
        if (word != "ready") throw std::runtime_error("peer said: " + *line);
        view_.emplace(ArenaView::open(arena_name_, owner_, peer_));
        reader_.emplace(
            RingReader::attach(view_->attach(descriptor_), descriptor_.generation, table_));
    }
    ~PeerRing() {
        if (view_) {
            try {
                view_->detach(descriptor_);
            } catch (const Error&) {
            }
        }
        child_.kill(SIGKILL);
        (void)child_.wait(Deadline(10s));
        Segment::remove(arena_name_);  // the peer unlinks it itself unless it was killed
        Segment::remove(wakes_name_);
    }
    RingReader& reader() { return *reader_; }
    test::Child& child() { return child_; }
    Waiter waiter() const { return Waiter(table_, 0); }

private:
    Names names_;
    Uuid owner_;
    Uuid peer_;
    std::string arena_name_;
    std::string wakes_name_;
    Segment wakes_;
    WakeTable table_;
    test::Child child_;
    CarveDescriptor descriptor_;
    std::optional<ArenaView> view_;
    std::optional<RingReader> reader_;
};

/// Consumes until `count` records arrived (or something is wrong); checks each one.
struct Consumer {
    explicit Consumer(const test::RecordStream& s) : stream(s) {}
    const test::RecordStream& stream;
    std::uint64_t next = 0;
    std::uint64_t checksum = 0;
    std::string error;

    void check(const RecordView& v) {
        const auto expected = stream.payload(next);
        if (error.empty() &&
            (v.seq_lo != static_cast<std::uint32_t>(next) ||
             v.kind != test::RecordStream::kind(next) ||
             v.flags != test::RecordStream::flags(next) || v.payload.size() != expected.size() ||
             std::memcmp(v.payload.data(), expected.data(), expected.size()) != 0)) {
            error = "record " + std::to_string(next) + " differs (size " +
                    std::to_string(v.payload.size()) + ", expected " +
                    std::to_string(expected.size()) + ")";
        }
        checksum = test::RecordStream::fold(checksum, v.payload);
        ++next;
    }
};

/// Pins this thread and `peer` to two different allowed CPUs while it lives (if there are two).
class CpuSplit {
public:
    explicit CpuSplit(pid_t peer) {
        if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0) return;
        std::size_t cpus[2] = {0, 0};
        int found = 0;
        for (std::size_t c = 0; c < CPU_SETSIZE && found < 2; ++c) {
            if (CPU_ISSET(c, &saved_)) cpus[found++] = c;
        }
        if (found < 2) return;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[0], &one);
        active_ = ::sched_setaffinity(0, sizeof one, &one) == 0;
        CPU_ZERO(&one);
        CPU_SET(cpus[1], &one);
        (void)::sched_setaffinity(peer, sizeof one, &one);
    }
    ~CpuSplit() {
        if (active_) (void)::sched_setaffinity(0, sizeof saved_, &saved_);
    }
    CpuSplit(const CpuSplit&) = delete;
    CpuSplit& operator=(const CpuSplit&) = delete;

private:
    cpu_set_t saved_{};
    bool active_ = false;
};

class RingXproc : public ::testing::TestWithParam<WaitMode> {};

TEST_P(RingXproc, StreamsRandomSizedRecordsWithoutLossOrReordering) {
    const WaitMode mode = GetParam();
    const std::uint64_t count = test::scaled(10'000'000, 1000);
    PeerRing ring("produce", count, mode, mode == WaitMode::busy_spin ? 1 : 16);
    // Two busy-spinning processes sharing one CPU each burn a whole time slice per hand-off;
    // on a loaded 2-CPU machine that made this test 10x slower. Keep them on different CPUs.
    const CpuSplit split(ring.child().pid());
    const test::RecordStream stream(count, kMaxRecord);
    Consumer consumer(stream);
    Waiter waiter = ring.waiter();
    const WaitPolicy policy{mode, 2000};
    std::uint64_t round = 0;
    while (consumer.next < count && consumer.error.empty()) {
        const WaitStatus s = ring.reader().wait_readable(waiter, Deadline(60s), {}, policy);
        ASSERT_EQ(s, WaitStatus::ready)
            << "at record " << consumer.next << "; peer " << ring.child().describe();
        if (++round % 2 == 0) {
            const auto r =
                ring.reader().drain([&](const RecordView& v) { consumer.check(v); }, 256);
            ASSERT_NE(r.status, ReadResult::protocol_error) << ring.reader().error_text();
        } else {
            RecordView v;
            const ReadResult r = ring.reader().try_read(v);
            ASSERT_NE(r, ReadResult::protocol_error) << ring.reader().error_text();
            if (r == ReadResult::ok) consumer.check(v);
            ring.reader().release();
        }
    }
    ASSERT_EQ(consumer.error, "");
    EXPECT_EQ(consumer.next, count);
    const auto done = ring.child().read_line(Deadline(20s));
    ASSERT_TRUE(done.has_value()) << ring.child().describe();
    char expected_line[96];
    std::snprintf(expected_line, sizeof expected_line, "done %" PRIu64 " %" PRIu64, count,
                  consumer.checksum);
    EXPECT_EQ(*done, expected_line);
    RecordView none;
    EXPECT_EQ(ring.reader().try_read(none), ReadResult::empty);
    ring.child().write("exit\n");
    const auto status = ring.child().wait(Deadline(20s));
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ring.child().describe();
}

INSTANTIATE_TEST_SUITE_P(AllWaitModes, RingXproc,
                         ::testing::Values(WaitMode::busy_spin, WaitMode::spin_yield,
                                           WaitMode::block),
                         [](const auto& param_info) {
                             return std::string(mode_name(param_info.param));
                         });

/// Drains everything visible now; returns how many records were valid.
std::uint64_t drain_all(RingReader& reader, Consumer& consumer) {
    for (;;) {
        const auto r = reader.drain([&](const RecordView& v) { consumer.check(v); }, 1024);
        if (r.count == 0 || r.status == ReadResult::protocol_error) break;
    }
    return consumer.next;
}

void expect_killed(test::Child& child) {
    const auto status = child.wait(Deadline(20s));
    ASSERT_TRUE(status.has_value()) << child.describe();
    EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << child.describe();
}

TEST(RingXprocFault, ProducerKilledAfterClaimLeavesOnlyPublishedRecords) {
    if (!fault_points_enabled()) GTEST_SKIP() << "built without SHMCTX_FAULT_POINTS";
    // Batches of 8 deferred commits; killed in the 101st claim: records 96..99 were committed
    // (headers and payloads written) but never published, so exactly 96 are visible.
    PeerRing ring("produce", 1000, WaitMode::block, 8, {"SHMCTX_FAULT=ring.after_claim=kill@101"});
    expect_killed(ring.child());
    const test::RecordStream stream(1000, kMaxRecord);
    Consumer consumer(stream);
    EXPECT_EQ(drain_all(ring.reader(), consumer), 96U);
    EXPECT_EQ(consumer.error, "");
    EXPECT_FALSE(ring.reader().has_protocol_error()) << ring.reader().error_text();
    Waiter waiter = ring.waiter();
    EXPECT_EQ(ring.reader().wait_readable(waiter, Deadline(20ms)), WaitStatus::timed_out);
}

TEST(RingXprocFault, ProducerKilledAfterCommitLeavesEveryCommittedRecord) {
    if (!fault_points_enabled()) GTEST_SKIP() << "built without SHMCTX_FAULT_POINTS";
    PeerRing ring("produce", 1000, WaitMode::block, 1, {"SHMCTX_FAULT=ring.after_commit=kill@50"});
    expect_killed(ring.child());
    const test::RecordStream stream(1000, kMaxRecord);
    Consumer consumer(stream);
    EXPECT_EQ(drain_all(ring.reader(), consumer), 50U);
    EXPECT_EQ(consumer.error, "");
    EXPECT_FALSE(ring.reader().has_protocol_error()) << ring.reader().error_text();
}

TEST(RingXprocFault, OwnerKilledWhileCarvingLeavesAValidArenaHeader) {
    if (!fault_points_enabled()) GTEST_SKIP() << "built without SHMCTX_FAULT_POINTS";
    for (const char* point : {"arena.before_publish", "arena.after_carve"}) {
        SCOPED_TRACE(point);
        Names names(test::unique_ns("ring-arena-kill"));
        const Uuid owner = Uuid::random();
        const Uuid peer = Uuid::random();
        const std::string arena_name = names.arena(owner, peer);
        const std::string wakes_name = names.prefix() + "wakes";
        Segment wakes = Segment::create(wakes_name, 4096);
        struct Remove {
            std::string a, b;
            ~Remove() {
                Segment::remove(a);
                Segment::remove(b);
            }
        } remove{arena_name, wakes_name};
        test::Child child = test::spawn(
            "ring_peer",
            {"produce", arena_name, owner.to_hex(), peer.to_hex(), wakes_name, "10", "block", "1"},
            {std::string("SHMCTX_FAULT=") + point + "=kill"});
        const auto status = child.wait(Deadline(20s));
        ASSERT_TRUE(status.has_value()) << child.describe();
        EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL) << child.describe();
        // The arena stays consistent: its header validates, and no descriptor was ever sent.
        const ArenaView view = ArenaView::open(arena_name, owner, peer);
        const CarveDescriptor never_sent{kArenaCarveBase + kCarveHeaderBytes,
                                         ring_region_bytes(std::size_t{1} << 20), 1};
        if (std::string_view(point) == "arena.before_publish") {
            EXPECT_THROW((void)view.attach(never_sent), ProtocolError);  // no generation yet
        } else {
            EXPECT_NO_THROW((void)view.attach(never_sent));
        }
    }
}

void expect_scribble_detected(const std::string& action, std::string_view text_part) {
    PeerRing ring(action, 20, WaitMode::block, 1);
    ASSERT_TRUE(ring.child().expect_line("written", Deadline(20s))) << ring.child().describe();
    const test::RecordStream stream(20, kMaxRecord);
    Consumer consumer(stream);
    EXPECT_EQ(drain_all(ring.reader(), consumer), 20U);
    EXPECT_EQ(consumer.error, "");
    ring.child().write("scribble\n");
    ASSERT_TRUE(ring.child().expect_line("scribbled", Deadline(20s))) << ring.child().describe();
    RecordView v;
    EXPECT_EQ(ring.reader().try_read(v), ReadResult::protocol_error);
    EXPECT_NE(ring.reader().error_text().find(text_part), std::string_view::npos)
        << ring.reader().error_text();
    // We survive, the ring stays diagnosable, and waits return at once instead of hanging.
    Waiter waiter = ring.waiter();
    EXPECT_EQ(ring.reader().wait_readable(waiter, Deadline(5s)), WaitStatus::ready);
    EXPECT_EQ(ring.reader().try_read(v), ReadResult::protocol_error);
    ring.child().write("exit\n");
    const auto status = ring.child().wait(Deadline(20s));
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << ring.child().describe();
}

TEST(RingXprocFault, ReaderReportsAForgedRecordLengthAndSurvives) {
    expect_scribble_detected("scribble-len", "length");
}

TEST(RingXprocFault, ReaderReportsAScribbledTailAndSurvives) {
    expect_scribble_detected("scribble-tail", "tail");
}

}  // namespace
}  // namespace shmctx::shm
